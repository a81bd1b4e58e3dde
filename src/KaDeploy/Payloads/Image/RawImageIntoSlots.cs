using System.Buffers;
using KaDeploy.IO;
using KaDeploy.Payloads.Block;
using Microsoft.Win32.SafeHandles;

namespace KaDeploy.Payloads.Image;

/// <summary>
/// The block map (<see cref="BlockMapFormat"/>) of a raw image held in a regular file, read straight into the memory a
/// stream lends (the server's ring slot, through the digest stream): one user-space copy fewer per byte than
/// <see cref="BlockDeviceSource"/>, which reads into a buffer of its own and then writes it (issue 10).
/// </summary>
/// <remarks>
/// A DATA record's length comes before its bytes, so a piece read into the slots is sent whole, zero blocks included.
/// Zero blocks are still left out: holes are skipped as before (SEEK_DATA), the first piece and every piece after
/// one that held an all-zero block go through a buffer and are cut block by block exactly as
/// <see cref="BlockDeviceSource"/> does, and the bytes read into the slots are checked for zero blocks as they
/// arrive. So a dense image goes straight into the slots, and at most one piece of <see cref="DirectPiece"/> bytes
/// of zeros per change from dense to sparse is sent as data (still correct: a block map may carry zeros).
/// </remarks>
internal static class RawImageIntoSlots
{
    /// <summary>Image bytes per DATA record read straight into the slots: the most zeros such a record may carry.</summary>
    internal const int DirectPiece = 1 << 20;

    /// <summary>
    /// Writes the block map of the regular file <paramref name="path"/> (<paramref name="length"/> bytes when it was
    /// opened) to <paramref name="output"/>, whose lent segments <paramref name="lender"/> gives.
    /// </summary>
    public static async Task WriteAsync(string path, long length, int blockSize, Stream output, ISegmentWriter lender, CancellationToken cancellationToken)
    {
        if (!lender.LendsSegments) throw new ArgumentException("the output lends no segments", nameof(lender));
        using SafeFileHandle handle = Open(path);
        long now = RandomAccess.GetLength(handle);
        if (now != length) throw new KaDeployException($"{path} changed size from {length} to {now} bytes since it was opened");

        var map = new BlockMapWriter(output, length, blockSize);
        await map.WriteHeaderAsync(cancellationToken).ConfigureAwait(false);

        int directPiece = Math.Max(DirectPiece, blockSize); // both powers of two: a whole number of blocks
        bool direct = false; // the first piece is cut exactly: an image often starts with a sparse area
        byte[]? buffer = null;
        try
        {
            long position = 0;
            while (BlockNative.TryNextDataExtent(handle, position, length, out long start, out long end))
            {
                start = Math.Max(start - start % blockSize, position);
                end = Math.Min(end + (blockSize - end % blockSize) % blockSize, length);
                for (long offset = start; offset < end;)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    int n = (int)Math.Min(direct ? directPiece : BlockDeviceSource.ReadSize, end - offset);
                    if (direct)
                    {
                        await map.BeginRecordAsync(offset, n, cancellationToken).ConfigureAwait(false);
                        direct = !await ReadIntoSlotsAsync(handle, path, offset, n, blockSize, lender, cancellationToken).ConfigureAwait(false);
                    }
                    else
                    {
                        buffer ??= ArrayPool<byte>.Shared.Rent(BlockDeviceSource.ReadSize);
                        ReadExactly(handle, path, buffer.AsSpan(0, n), offset);
                        bool sawZero = false;
                        int from = 0;
                        while (BlockDeviceSource.FindRun(buffer.AsSpan(0, n), blockSize, ref from, out int runStart, out int runLength, ref sawZero))
                        {
                            await map.WriteRunAsync(offset + runStart, buffer.AsMemory(runStart, runLength), cancellationToken).ConfigureAwait(false);
                        }
                        direct = !sawZero;
                    }
                    offset += n;
                }
                position = end;
            }
        }
        finally
        {
            if (buffer is not null) ArrayPool<byte>.Shared.Return(buffer);
        }

        await map.WriteEndAsync(cancellationToken).ConfigureAwait(false);
    }

    private static SafeFileHandle Open(string path)
    {
        try
        {
            // Sequential: the kernel reads ahead, which the buffered path's overlapped read did by hand.
            return File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.SequentialScan);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"cannot open {path}: {e.Message}", e);
        }
    }

    // Reads [offset, offset + length) into the lent segments, one pread per segment (the rest of a frame). True when
    // one of its blocks was all zero: the next piece is then cut exactly.
    private static async ValueTask<bool> ReadIntoSlotsAsync(SafeFileHandle handle, string path, long offset, int length, int blockSize,
        ISegmentWriter lender, CancellationToken cancellationToken)
    {
        var zeros = new ZeroBlocks(blockSize);
        while (length > 0)
        {
            Memory<byte> segment = await lender.GetSegmentAsync(cancellationToken).ConfigureAwait(false);
            int n = Math.Min(segment.Length, length);
            Span<byte> into = segment.Span[..n];
            ReadExactly(handle, path, into, offset);
            zeros.Add(into);
            lender.Advance(n);
            offset += n;
            length -= n;
        }
        return zeros.Finish();
    }

    private static void ReadExactly(SafeFileHandle handle, string path, Span<byte> into, long offset)
    {
        int n;
        try
        {
            n = PositionalRead.Full(handle, into, offset);
        }
        catch (IOException e)
        {
            throw new KaDeployException($"cannot read {path} at {offset}: {e.Message}", e);
        }
        if (n < into.Length) throw new KaDeployException($"{path} ended at {offset + n} while reading: it shrank since it was opened");
    }

    // Whether any block of a piece that arrives in segments of any length was all zero. The piece starts on a block
    // boundary. On random data each block costs one byte's look.
    private struct ZeroBlocks(int blockSize)
    {
        private int _filled;      // bytes of the current block seen
        private bool _nonZero;    // the current block has a byte that is not zero
        private bool _sawZero;

        public void Add(ReadOnlySpan<byte> bytes)
        {
            while (!bytes.IsEmpty)
            {
                int k = Math.Min(bytes.Length, blockSize - _filled);
                if (!_nonZero && bytes[..k].IndexOfAnyExcept((byte)0) >= 0) _nonZero = true;
                _filled += k;
                bytes = bytes[k..];
                if (_filled == blockSize) EndBlock();
            }
        }

        public bool Finish()
        {
            if (_filled > 0) EndBlock(); // the image's last, shorter block
            return _sawZero;
        }

        private void EndBlock()
        {
            if (!_nonZero) _sawZero = true;
            _filled = 0;
            _nonZero = false;
        }
    }
}
