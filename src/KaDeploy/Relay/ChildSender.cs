namespace KaDeploy.Relay;

/// <summary>
/// Forwards ring frames to one child link, byte for byte, from the slot (no copy in user space).
/// One per child; a node has at most its arity of them.
/// </summary>
public sealed class ChildSender
{
    private readonly RingCursor _cursor;
    private readonly Stream _link;
    private readonly long _skipBelow;

    /// <param name="cursor">Where to read.</param>
    /// <param name="link">The child's data link.</param>
    /// <param name="skipBelow">
    /// Data frames before this wire offset are passed over, not sent: a child that re-attached to a parent
    /// that is behind it (itself resuming) waits for the parent to catch up instead of being refused.
    /// </param>
    public ChildSender(RingCursor cursor, Stream link, long skipBelow = 0)
    {
        ArgumentNullException.ThrowIfNull(cursor);
        ArgumentNullException.ThrowIfNull(link);
        _cursor = cursor;
        _link = link;
        _skipBelow = skipBelow;
    }

    /// <summary>Wire bytes (headers included) sent to this child.</summary>
    public long SentBytes { get; private set; }

    /// <summary>Sends until the End frame has been written; detaches from the ring however it ends.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                var frame = await _cursor.NextAsync(cancellationToken).ConfigureAwait(false);
                if (frame.Header.Type == Protocol.DataFrameType.Data && frame.Header.Offset < _skipBelow)
                {
                    _cursor.Advance();
                    continue;
                }
                await _link.WriteAsync(frame.Bytes, cancellationToken).ConfigureAwait(false);
                SentBytes += frame.Bytes.Length;
                bool end = frame.Header.Type == Protocol.DataFrameType.End;
                _cursor.Advance();
                if (end) break;
            }
            await _link.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _cursor.Dispose();
        }
    }
}
