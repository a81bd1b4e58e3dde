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

/// <summary>
/// A read stream that lends runs of segments and takes them back later, oldest first (issue 10): a sink writes a
/// run with one system call (writev, pwritev), or hands it to a pipe by reference and gives each segment back only
/// once its reader has read past it. Lent segments stay valid, and their memory unused by anyone else, until they
/// are returned; the stream's other reads return whatever is still lent first.
/// </summary>
public interface ISegmentRunReader
{
    /// <summary>False when the stream cannot lend runs (a wrapper over a stream that cannot): read segments instead.</summary>
    bool LendsRuns { get; }

    /// <summary>Segments lent and not yet returned.</summary>
    int Outstanding { get; }

    /// <summary>
    /// Waits for the segment that follows those already lent and lends it with those after it that are there now, in
    /// order, at most <paramref name="segments"/>' length (and, from a relay ring, about one receive's worth, 1 MiB);
    /// the count, 0 at the end of the stream. Never an empty segment.
    /// </summary>
    ValueTask<int> LendAsync(Memory<ReadOnlyMemory<byte>> segments, CancellationToken cancellationToken);

    /// <summary>Gives back the oldest <paramref name="count"/> segments lent: their memory may be reused from now on.</summary>
    void Return(int count);
}
