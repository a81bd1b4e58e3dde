namespace KaDeploy.IO;

/// <summary>
/// A read stream that can lend the bytes it holds instead of copying them into the caller's buffer: a sink
/// that can write from any memory (a pipe, a file) then moves each relayed frame with one system call and
/// no copy of its own (issue 10).
/// </summary>
public interface ISegmentReader
{
    /// <summary>
    /// The next bytes of the stream, lent: valid only until the next read of any kind on this stream (or its
    /// disposal). Empty at the end of the stream.
    /// </summary>
    ValueTask<ReadOnlyMemory<byte>> ReadSegmentAsync(CancellationToken cancellationToken);

    /// <summary>
    /// The stream can also lend segments that stay valid past the next read, until the caller releases them
    /// (<see cref="ReadHeldSegments"/>, <see cref="ReleaseHeld"/>): what a sink needs that hands the kernel a
    /// reference to the bytes instead of a copy (vmsplice(2) into a pipe), and must keep them unchanged until the
    /// reader on the far side has taken them.
    /// </summary>
    bool CanHoldSegments => false;

    /// <summary>
    /// Blocks for the next bytes of the stream and lends them into <paramref name="segments"/>, with whatever
    /// follows them that is already at hand, up to the span's length and the lender's room. Returns how many
    /// segments were lent, 0 at the end of the stream, or -1 at once when the room ran out before a byte was lent
    /// (a frame without payload takes room too): release some, then read again. The room is bounded because a lender
    /// that held more would stop its own producer (a ring whose window the held frames fill), and a caller waiting for
    /// new bytes while holding old ones would then wait forever. Held segments lie in pinned memory (their addresses may be
    /// handed to the kernel) and stay unchanged until <see cref="ReleaseHeld"/> releases them; nothing else may be
    /// read from the stream while segments are held.
    /// </summary>
    int ReadHeldSegments(Span<ReadOnlyMemory<byte>> segments, CancellationToken cancellationToken) => throw new NotSupportedException();

    /// <summary>
    /// The caller is done with the next <paramref name="bytes"/> bytes held, in the order they were lent (a segment
    /// partly done stays held until its last byte is released; a frame without payload, such as the End frame, is
    /// released with the bytes before it): their memory may be reused.
    /// </summary>
    void ReleaseHeld(long bytes) => throw new NotSupportedException();
}
