namespace KaDeploy.IO;

/// <summary>
/// A write stream that can lend the memory its next bytes go to, so that a source reads straight into it (the
/// server's ring slot) instead of into a buffer of its own that is then copied (issues 10 and 14). The counterpart
/// of <see cref="ISegmentReader"/>.
/// </summary>
public interface ISegmentWriter
{
    /// <summary>False when the stream cannot lend (a wrapper over a stream that cannot): write to it instead.</summary>
    bool LendsSegments { get; }

    /// <summary>
    /// Memory for the stream's next bytes (never empty), lent: fill a prefix of it, then <see cref="Advance"/>. Valid
    /// only until the next call of any kind on this stream.
    /// </summary>
    ValueTask<Memory<byte>> GetSegmentAsync(CancellationToken cancellationToken);

    /// <summary>Takes the first <paramref name="count"/> bytes of the segment last lent as written.</summary>
    void Advance(int count);
}
