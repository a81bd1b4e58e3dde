namespace KaDeploy.Payloads.Block;

/// <summary>
/// Writes lent pieces of a file's contents (ring slots, valid only until the next read) so that every write ends on
/// a page boundary, and so starts on one when it continues the write before: the unaligned tail of a piece (under
/// a page) is copied aside and written at the head of the next piece's write, with pwritev(2), so the large piece
/// itself is never copied. On a block device a buffered write that covers a page in part makes the kernel read that
/// page from the device first: a keyed session's frames carry 65,504 or 65,520 bytes of plaintext, and written where
/// they land they cost one device read per frame (4,066 per 256 MiB, measured; none this way). On tmpfs the
/// relayed block map's frames, 37 bytes off the grid, cost the same either way within the noise (issue 10,
/// bench/README.md).
/// </summary>
internal sealed class PageAlignedWriter(BlockFile target)
{
    private const int PageSize = 4096;

    private readonly byte[] _carry = new byte[PageSize];
    private int _carried;      // bytes in _carry, the file's bytes [_carryOffset, _carryOffset + _carried)
    private long _carryOffset;

    /// <summary>Bytes taken and not yet written: at most a page, written by the next <see cref="Write"/> or <see cref="Flush"/>.</summary>
    public int Pending => _carried;

    /// <summary>
    /// Takes <paramref name="piece"/>, the file's bytes at <paramref name="offset"/>: writes them, with whatever was
    /// carried, up to the last page boundary they reach, and copies the rest aside. A piece that does not continue
    /// the carried bytes first flushes them.
    /// </summary>
    public void Write(ReadOnlySpan<byte> piece, long offset)
    {
        if (piece.IsEmpty) return;
        if (_carried > 0 && _carryOffset + _carried != offset) Flush();
        if (_carried == 0) _carryOffset = offset;
        long alignedEnd = (offset + piece.Length) & ~(long)(PageSize - 1);
        if (alignedEnd <= _carryOffset)
        {
            // Still inside the carried bytes' page: nothing to write yet.
            piece.CopyTo(_carry.AsSpan(_carried));
            _carried += piece.Length;
            return;
        }
        // No page boundary lies in (_carryOffset, offset] while bytes are carried (they would have been written up
        // to it), so the boundary reached lies inside this piece.
        int now = (int)(alignedEnd - offset);
        BlockNative.WriteAt(target.Handle, _carry.AsSpan(0, _carried), piece[..now], _carryOffset, target.Path);
        ReadOnlySpan<byte> tail = piece[now..];
        tail.CopyTo(_carry);
        _carried = tail.Length;
        _carryOffset = alignedEnd;
    }

    /// <summary>Writes the carried bytes (the end of a run that is not followed by the next, or of the file).</summary>
    public void Flush()
    {
        if (_carried == 0) return;
        BlockNative.WriteAt(target.Handle, _carry.AsSpan(0, _carried), default, _carryOffset, target.Path);
        _carried = 0;
    }
}
