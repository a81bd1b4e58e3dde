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
}
