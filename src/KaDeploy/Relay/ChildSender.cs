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

    // One segment of the ring: about 1 MiB.
    private const int MaxWrite = RelayRing.SegmentSlots * RelayRing.SlotSize;

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
                // Every published frame that lies back to back with this one goes in the same write: a child
                // that fell behind by a few frames catches up with one system call, not one per frame.
                var run = await _cursor.NextRunAsync(MaxWrite, cancellationToken).ConfigureAwait(false);
                if (run.First.Type == Protocol.DataFrameType.Data && run.First.Offset < _skipBelow)
                {
                    _cursor.Advance();
                    continue;
                }
                await _link.WriteAsync(run.Bytes, cancellationToken).ConfigureAwait(false);
                SentBytes += run.Bytes.Length;
                _cursor.Advance(run.Frames);
                if (run.EndsWithEnd) break;
            }
            await _link.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _cursor.Dispose();
        }
    }
}
