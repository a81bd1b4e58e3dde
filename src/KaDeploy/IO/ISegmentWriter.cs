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

    /// <summary>
    /// Memory for the stream's next bytes in up to <paramref name="into"/>.Length pieces that follow each other in the
    /// stream (not in memory): one vectored read (preadv) fills several frames at once. Returns how many pieces were
    /// lent (at least one, none empty), together at most about <paramref name="maxBytes"/>. Fill them in order (all but
    /// the last filled wholly before the next gets a byte), then <see cref="Advance"/> by the total. Valid only until the
    /// next call of any kind on this stream. A stream that lends one piece at a time lends just that one.
    /// </summary>
    async ValueTask<int> GetSegmentsAsync(Memory<byte>[] into, int maxBytes, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(into);
        ArgumentOutOfRangeException.ThrowIfZero(into.Length);
        into[0] = await GetSegmentAsync(cancellationToken).ConfigureAwait(false);
        return 1;
    }

    /// <summary>Takes the first <paramref name="count"/> bytes of the memory last lent (all pieces of it, in order) as written.</summary>
    void Advance(int count);
}
