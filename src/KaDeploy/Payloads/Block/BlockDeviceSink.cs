using System.Buffers;

namespace KaDeploy.Payloads.Block;

/// <summary>How a <see cref="BlockDeviceSink"/> treats the parts of a device that the image leaves out.</summary>
public sealed class BlockDeviceSinkOptions
{
    /// <summary>
    /// The operator knows the device already reads as zeros (freshly discarded or a new thin volume): skip zeroing
    /// the gaps between data runs. Ignored for regular files, whose gaps are holes anyway.
    /// </summary>
    public bool AssumeZeroed { get; init; }
}

/// <summary>
/// Writes a block map (<see cref="BlockMapFormat"/>) to a block device or a regular file so that the target reads
/// back exactly as the image, then fsyncs it. A regular file is truncated and set to the image's length; data runs
/// are written at their offsets and gaps stay holes (the file is sparse). On a block device every gap is made to
/// read as zero with BLKZEROOUT (writing zeros where the kernel will not), unless
/// <see cref="BlockDeviceSinkOptions.AssumeZeroed"/> is set. A device smaller than the image is refused before
/// anything is written. Everything in the stream is validated before it is written, so a hostile stream cannot
/// write outside [0, image length).
/// </summary>
public sealed class BlockDeviceSink : IPayloadSink
{
    private const int BufferSize = 4 * 1024 * 1024;
    private const int ZeroBufferSize = 1024 * 1024;

    private readonly BlockDeviceSinkOptions _options;

    /// <summary>Creates a sink for <paramref name="path"/>: a block device, or a regular file (created if missing).</summary>
    public BlockDeviceSink(string path, BlockDeviceSinkOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Path = path;
        _options = options ?? new BlockDeviceSinkOptions();
    }

    /// <summary>The device or file written.</summary>
    public string Path { get; }

    /// <inheritdoc />
    public string Description => $"block map to {Path}";

    /// <summary>Data bytes written by the last completed <see cref="ConsumeAsync"/>.</summary>
    public long DataBytesWritten { get; private set; }

    /// <summary>Gap bytes zeroed on a block device by the last completed <see cref="ConsumeAsync"/>.</summary>
    public long GapBytesZeroed { get; private set; }

    /// <inheritdoc />
    public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(input);
        var reader = new BlockMapReader(input);
        // The header comes first so that a bad stream or a small device fails before the target is touched.
        BlockMapHeader header = await reader.ReadHeaderAsync(cancellationToken).ConfigureAwait(false);

        using BlockFile target = BlockFile.OpenWrite(Path);
        if (target.IsBlockDevice && target.Length < header.TotalLength)
            throw new KaDeployException($"target {Path} holds {target.Length} bytes, the image needs {header.TotalLength}");
        if (!target.IsBlockDevice)
        {
            try
            {
                RandomAccess.SetLength(target.Handle, header.TotalLength);
            }
            catch (Exception e) when (e is IOException or ArgumentOutOfRangeException)
            {
                // EFBIG comes back as ArgumentOutOfRangeException: an image larger than this file system allows.
                throw new KaDeployException($"cannot set the length of {Path} to {header.TotalLength}: {e.Message}", e);
            }
        }
        if (reader.LendsRunData && !target.IsBlockDevice)
        {
            await WriteLentRunsAsync(reader, target, cancellationToken).ConfigureAwait(false);
            return;
        }
        bool zeroGaps = target.IsBlockDevice && !_options.AssumeZeroed;

        // A block device, or a stream that cannot lend: each run through buffers of ours, written at the run's
        // block-aligned offsets in large pieces. A lent frame would put every write 13 bytes off (the record headers
        // in the stream), and a buffered write that covers a sector only in part makes the kernel read that sector
        // from the device first; the copy costs far less than a disk read per frame.
        byte[] current = ArrayPool<byte>.Shared.Rent(BufferSize);
        byte[] spare = ArrayPool<byte>.Shared.Rent(BufferSize);
        Task? pending = null;   // the previous piece's write, overlapped with reading the next piece
        long position = 0;      // everything before this is written or zeroed (or a hole)
        long gapBytes = 0;
        try
        {
            while (await reader.ReadNextRunAsync(cancellationToken).ConfigureAwait(false) is BlockMapRun run)
            {
                if (zeroGaps && run.Offset > position)
                {
                    await AwaitPending(ref pending).ConfigureAwait(false);
                    await ZeroAsync(target, position, run.Offset - position, cancellationToken).ConfigureAwait(false);
                    gapBytes += run.Offset - position;
                }
                long offset = run.Offset;
                while (reader.RunRemaining > 0)
                {
                    int n = Math.Min(reader.RunRemaining, BufferSize);
                    await reader.ReadRunDataAsync(current.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                    await AwaitPending(ref pending).ConfigureAwait(false);
                    pending = target.WriteAtAsync(current.AsMemory(0, n), offset, cancellationToken).AsTask();
                    offset += n;
                    (current, spare) = (spare, current);
                }
                position = run.End;
            }
            await AwaitPending(ref pending).ConfigureAwait(false);
            if (zeroGaps && header.TotalLength > position)
            {
                await ZeroAsync(target, position, header.TotalLength - position, cancellationToken).ConfigureAwait(false);
                gapBytes += header.TotalLength - position;
            }
            target.Sync();
            DataBytesWritten = reader.DataBytes;
            GapBytesZeroed = gapBytes;
        }
        finally
        {
            await OverlappedIo.ReturnAfterAsync(pending, current, spare).ConfigureAwait(false);
        }
    }

    // A regular file from a stream that lends its bytes (a relayed ring): each piece of a run is pwritten straight
    // from the ring slot it arrived in, no copy of ours and no allocation per frame. Synchronous on purpose, as in
    // RawStreamSink: the ring already buffers ahead of the file (--buffer), and an overlapped write would need the
    // loan to outlive the next read. The file's gaps are holes (set by its length), so there is nothing to zero.
    // The frames cut the runs anywhere (13-byte record headers sit between them): the writes go through a
    // PageAlignedWriter, which carries each piece's unaligned tail over to the next write.
    private async Task WriteLentRunsAsync(BlockMapReader reader, BlockFile target, CancellationToken cancellationToken)
    {
        var writer = new PageAlignedWriter(target);
        while (await reader.ReadNextRunAsync(cancellationToken).ConfigureAwait(false) is BlockMapRun run)
        {
            long offset = run.Offset;
            while (reader.RunRemaining > 0)
            {
                ReadOnlyMemory<byte> piece = await reader.ReadRunSegmentAsync(cancellationToken).ConfigureAwait(false);
                writer.Write(piece.Span, offset);
                offset += piece.Length;
            }
        }
        writer.Flush();
        target.Sync(); // durable before the node says verified; on tmpfs this costs nothing
        DataBytesWritten = reader.DataBytes;
        GapBytesZeroed = 0;
    }

    private static Task AwaitPending(ref Task? pending)
    {
        Task task = pending ?? Task.CompletedTask;
        pending = null;
        return task;
    }

    /// <summary>
    /// Makes [offset, offset + length) of a block device read as zeros: BLKZEROOUT for the sector-aligned middle
    /// (the kernel uses the device's write-zeroes or writes zero pages itself), plain zero writes for the unaligned
    /// edges or when the ioctl is refused.
    /// </summary>
    private static async ValueTask ZeroAsync(BlockFile target, long offset, long length, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        long sector = BlockNative.GetLogicalSectorSize(target.Handle);
        long alignedStart = (offset + sector - 1) / sector * sector;
        long alignedEnd = (offset + length) / sector * sector;
        if (alignedEnd > alignedStart && BlockNative.TryZeroOut(target.Handle, alignedStart, alignedEnd - alignedStart))
        {
            await WriteZerosAsync(target, offset, alignedStart - offset, cancellationToken).ConfigureAwait(false);
            await WriteZerosAsync(target, alignedEnd, offset + length - alignedEnd, cancellationToken).ConfigureAwait(false);
            return;
        }
        await WriteZerosAsync(target, offset, length, cancellationToken).ConfigureAwait(false);
    }

    private static async ValueTask WriteZerosAsync(BlockFile target, long offset, long length, CancellationToken cancellationToken)
    {
        if (length <= 0) return;
        byte[] zeros = ArrayPool<byte>.Shared.Rent((int)Math.Min(length, ZeroBufferSize));
        try
        {
            Array.Clear(zeros);
            while (length > 0)
            {
                int n = (int)Math.Min(length, zeros.Length);
                await target.WriteAtAsync(zeros.AsMemory(0, n), offset, cancellationToken).ConfigureAwait(false);
                offset += n;
                length -= n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(zeros);
        }
    }
}
