using System.Buffers;
using System.Diagnostics;

namespace KaDeploy.Payloads.Block;

/// <summary>
/// Encodes a block device or a raw image file as a block map (<see cref="BlockMapFormat"/>): reads it in large
/// pieces, leaves out every all-zero block, and for a regular file does not even read its holes (SEEK_DATA/SEEK_HOLE).
/// Memory is bounded by two read buffers of <see cref="ReadSize"/> bytes; the next piece is read while the current
/// one is written out.
/// </summary>
public sealed class BlockDeviceSource : IPayloadSource
{
    /// <summary>Bytes read from the disk at a time (and the longest run a record carries).</summary>
    public const int ReadSize = 4 * 1024 * 1024;

    /// <summary>
    /// Looks at <paramref name="path"/> now (so that a missing file or an unreadable device fails before a session
    /// starts) and measures it.
    /// </summary>
    /// <param name="path">A block device (/dev/sda2) or a regular file holding a raw image.</param>
    /// <param name="blockSize">Granularity of zero detection: a power of two from 512 B to 4 MiB.</param>
    public BlockDeviceSource(string path, int blockSize = BlockMapFormat.DefaultBlockSize)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!BlockMapFormat.IsValidBlockSize(blockSize) || blockSize > ReadSize)
            throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "block size must be a power of two from 512 B to 4 MiB");
        Path = path;
        BlockSize = blockSize;
        using BlockFile file = BlockFile.OpenRead(path);
        IsBlockDevice = file.IsBlockDevice;
        Length = file.Length;
        long upperBound = BlockMapFormat.HeaderLength + BlockMapFormat.EndRecordLength;
        foreach ((long _, int length) in Pieces(file, blockSize))
            upperBound += BlockMapFormat.DataRecordHeaderLength + length;
        EstimatedLength = upperBound;
    }

    /// <summary>The device or file read.</summary>
    public string Path { get; }

    /// <summary>Granularity of zero detection.</summary>
    public int BlockSize { get; }

    /// <summary>True when <see cref="Path"/> is a block device rather than a regular file.</summary>
    public bool IsBlockDevice { get; }

    /// <summary>Size of the device or file: the image's total length.</summary>
    public long Length { get; }

    /// <inheritdoc />
    public PayloadKind Kind => PayloadKind.BlockMap;

    /// <summary>
    /// An upper bound of the encoded length: every byte that is not a hole, plus record overhead. Each zero block
    /// left out saves more than the record header it may cost, so the real stream is never longer.
    /// </summary>
    public long? EstimatedLength { get; }

    /// <inheritdoc />
    public string Description => $"block map of {(IsBlockDevice ? "device" : "image")} {Path} ({Length} bytes)";

    /// <summary>Data bytes sent by the last completed <see cref="WriteToAsync"/> (the non-zero blocks).</summary>
    public long DataBytesSent { get; private set; }

    /// <inheritdoc />
    public async Task WriteToAsync(Stream output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(output);
        using BlockFile file = BlockFile.OpenRead(Path);
        if (file.Length != Length)
            throw new KaDeployException($"{Path} changed size from {Length} to {file.Length} bytes since it was opened");

        var writer = new BlockMapWriter(output, Length, BlockSize);
        await writer.WriteHeaderAsync(cancellationToken).ConfigureAwait(false);

        byte[] current = ArrayPool<byte>.Shared.Rent(ReadSize);
        byte[] next = ArrayPool<byte>.Shared.Rent(ReadSize);
        Task<int>? pending = null;
        try
        {
            using IEnumerator<(long Offset, int Length)> pieces = Pieces(file, BlockSize).GetEnumerator();
            if (pieces.MoveNext())
            {
                (long Offset, int Length) piece = pieces.Current;
                Task<int> read = file.ReadAtAsync(current.AsMemory(0, piece.Length), piece.Offset, cancellationToken).AsTask();
                pending = read;
                while (true)
                {
                    int n = await read.ConfigureAwait(false);
                    pending = null;
                    if (n != piece.Length)
                        throw new KaDeployException($"{Path} ended at {piece.Offset + n} while reading, expected {Length} bytes");

                    bool more = pieces.MoveNext();
                    (long Offset, int Length) following = more ? pieces.Current : default;
                    if (more)
                        pending = read = file.ReadAtAsync(next.AsMemory(0, following.Length), following.Offset, cancellationToken).AsTask();

                    int from = 0;
                    while (FindRun(current.AsSpan(0, n), BlockSize, ref from, out int start, out int length))
                        await writer.WriteRunAsync(piece.Offset + start, current.AsMemory(start, length), cancellationToken).ConfigureAwait(false);

                    if (!more) break;
                    piece = following;
                    (current, next) = (next, current);
                }
            }
            await writer.WriteEndAsync(cancellationToken).ConfigureAwait(false);
            DataBytesSent = writer.DataBytes;
        }
        finally
        {
            await OverlappedIo.ReturnAfterAsync(pending, current, next).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The pieces to read, in order: the whole device, or the data extents of a regular file widened to block
    /// boundaries; each at most <see cref="ReadSize"/> bytes, each starting on a block boundary.
    /// </summary>
    private static IEnumerable<(long Offset, int Length)> Pieces(BlockFile file, int blockSize)
    {
        long length = file.Length;
        long position = 0;
        while (position < length)
        {
            long start, end;
            if (file.IsBlockDevice)
            {
                start = position;
                end = length;
            }
            else
            {
                if (!BlockNative.TryNextDataExtent(file.Handle, position, length, out start, out end)) yield break;
                start = Math.Max(start - start % blockSize, position);
                end = Math.Min(end + (blockSize - end % blockSize) % blockSize, length);
            }
            Debug.Assert(end > position && start % blockSize == 0);
            for (long offset = start; offset < end; offset += ReadSize)
                yield return (offset, (int)Math.Min(ReadSize, end - offset));
            position = end;
        }
    }

    /// <summary>Finds the next run of blocks that are not all zero in <paramref name="piece"/> at or after <paramref name="from"/>.</summary>
    private static bool FindRun(ReadOnlySpan<byte> piece, int blockSize, ref int from, out int start, out int length)
    {
        bool sawZero = false;
        return FindRun(piece, blockSize, ref from, out start, out length, ref sawZero);
    }

    /// <summary>
    /// The same cut, noting in <paramref name="sawZero"/> whether it passed an all-zero block (the image source that
    /// reads into ring slots cuts the pieces it reads through a buffer with it).
    /// </summary>
    internal static bool FindRun(ReadOnlySpan<byte> piece, int blockSize, ref int from, out int start, out int length, ref bool sawZero)
    {
        int i = from;
        while (i < piece.Length && IsZero(piece, i, blockSize))
        {
            i += blockSize;
            sawZero = true;
        }
        start = Math.Min(i, piece.Length);
        while (i < piece.Length && !IsZero(piece, i, blockSize)) i += blockSize;
        int end = Math.Min(i, piece.Length);
        from = end;
        length = end - start;
        return length > 0;
    }

    private static bool IsZero(ReadOnlySpan<byte> piece, int offset, int blockSize) =>
        piece.Slice(offset, Math.Min(blockSize, piece.Length - offset)).IndexOfAnyExcept((byte)0) < 0;
}
