using System.Buffers;

namespace KaDeploy.Payloads.Block;

/// <summary>
/// Writes an opaque stream (<see cref="PayloadKind.Raw"/>) from offset 0 to a regular file (created or truncated)
/// or a block device, then fsyncs it. A stream longer than the device is refused at the first byte that would not
/// fit, with a message that says so, rather than with the kernel's bare ENOSPC.
/// </summary>
public sealed class RawStreamSink : IPayloadSink
{
    private const int BufferSize = 4 * 1024 * 1024;

    /// <summary>Creates a sink for <paramref name="path"/>: a block device, or a regular file (created if missing).</summary>
    public RawStreamSink(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Path = path;
    }

    /// <summary>The device or file written.</summary>
    public string Path { get; }

    /// <inheritdoc />
    public string Description => $"raw stream to {Path}";

    /// <summary>Bytes written by the last completed <see cref="ConsumeAsync"/>.</summary>
    public long BytesWritten { get; private set; }

    /// <inheritdoc />
    public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(input);
        using BlockFile target = BlockFile.OpenWrite(Path);
        long capacity = target.IsBlockDevice ? target.Length : long.MaxValue;
        if (input is IO.ISegmentReader lender)
        {
            BytesWritten = await WriteSegmentsAsync(lender, target, capacity, cancellationToken).ConfigureAwait(false);
            return;
        }

        byte[] current = ArrayPool<byte>.Shared.Rent(BufferSize);
        byte[] spare = ArrayPool<byte>.Shared.Rent(BufferSize);
        Task? pending = null;   // the previous piece's write, overlapped with reading the next piece
        long offset = 0;
        try
        {
            while (true)
            {
                int n = await ReadAtLeastAsync(input, current, cancellationToken).ConfigureAwait(false);
                if (n == 0) break;
                if (n > capacity - offset)
                    throw new KaDeployException($"the stream is larger than target {Path} ({capacity} bytes)");
                if (pending is not null) await pending.ConfigureAwait(false);
                pending = target.WriteAtAsync(current.AsMemory(0, n), offset, cancellationToken).AsTask();
                offset += n;
                (current, spare) = (spare, current);
            }
            if (pending is not null)
            {
                Task last = pending;
                pending = null;
                await last.ConfigureAwait(false);
            }
            target.Sync();
            BytesWritten = offset;
        }
        finally
        {
            await OverlappedIo.ReturnAfterAsync(pending, current, spare).ConfigureAwait(false);
        }
    }

    // A relayed stream lends each frame from its ring slot: pwrite(2) it from there, no copy of ours and no
    // allocation per frame. The writes are synchronous on purpose: the ring already buffers ahead of the disk
    // (--buffer), and an asynchronous file write would cost a thread-pool hop and a task per frame. Clear frames
    // (64 KiB) keep every write on the page grid; a keyed session's do not (65,504 or 65,520 bytes of plaintext),
    // and a device reads back every page a buffered write covers in part: the writes go through a
    // PageAlignedWriter, which carries each unaligned tail over to the next write.
    private async Task<long> WriteSegmentsAsync(IO.ISegmentReader lender, BlockFile target, long capacity, CancellationToken cancellationToken)
    {
        var writer = new PageAlignedWriter(target);
        long offset = 0;
        while (true)
        {
            ReadOnlyMemory<byte> segment = await lender.ReadSegmentAsync(cancellationToken).ConfigureAwait(false);
            if (segment.IsEmpty) break;
            if (segment.Length > capacity - offset)
                throw new KaDeployException($"the stream is larger than target {Path} ({capacity} bytes)");
            writer.Write(segment.Span, offset);
            offset += segment.Length;
        }
        writer.Flush();
        target.Sync(); // durable before the node says verified; on tmpfs this costs nothing
        return offset;
    }

    // Network streams hand out small reads; gather a large piece so the disk sees large writes.
    private static async ValueTask<int> ReadAtLeastAsync(Stream input, byte[] buffer, CancellationToken cancellationToken)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = await input.ReadAsync(buffer.AsMemory(total), cancellationToken).ConfigureAwait(false);
            if (n == 0) break;
            total += n;
            if (total >= 1024 * 1024) break;
        }
        return total;
    }
}
