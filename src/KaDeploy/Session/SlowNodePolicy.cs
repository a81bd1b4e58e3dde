namespace KaDeploy.Session;

/// <summary>What the slow-node decision needs to know of one node, read from its heartbeats and the live tree.</summary>
/// <param name="Detached">Left the tree (failed, or its own sink failed).</param>
/// <param name="Moved">Already moved off the tree for being slow.</param>
/// <param name="Finished">Gave its verdict.</param>
/// <param name="Complete">Has the whole stream (its End frame arrived): nothing upstream waits on it any more.</param>
/// <param name="HeldSince">Since when its own sink has held its ring full (Environment.TickCount64; 0 = not held).</param>
/// <param name="TakenWhileHeld">Bytes its sink took since the hold began (verified offset now less the offset then).</param>
/// <param name="SpoolKeepsIt">The spool will still hold the node's offset when the others are served, so a moved node can
/// be fed from there (a memory spool keeps only the stream's last part).</param>
/// <param name="OrphansHeld">Every child it has would find its offset held where it re-attaches (<see cref="RepairPlanner"/>):
/// moving it strands none of them.</param>
/// <param name="SinkHeldAt">When it last said its own sink held its ring full (Environment.TickCount64; 0 = never).</param>
internal readonly record struct SlowNodeView(bool Detached, bool Moved, bool Finished, bool Complete, long HeldSince, long TakenWhileHeld,
    bool SpoolKeepsIt = true, bool OrphansHeld = true, long SinkHeldAt = 0)
{
    /// <summary>Still taking part in the main tree's stream: its progress is what a move would free.</summary>
    public bool Receiving => !Detached && !Moved && !Finished && !Complete;
}

/// <summary>
/// Which node, if any, to move off the tree for being slow. A pure function of the nodes' views, so every edge
/// (one node, nobody left to free, no spool, the quarter cap) is decided in one place and tested without a session.
/// </summary>
internal static class SlowNodePolicy
{
    /// <summary>
    /// Whether a spool that keeps the stream's last <paramref name="keeps"/> wire bytes (-1: all, a file spool) will still
    /// hold <paramref name="offset"/> once the stream has ended, for a stream of about <paramref name="total"/> payload
    /// bytes. The estimate counts payload bytes; 1 % and a MiB cover the framing (a compressed stream is shorter on the
    /// wire: on the safe side). An unknown length (-1, an --exec source) promises nothing either way: the move is made,
    /// as before this check, and a node the spool let go fails with that reason (testbed/repair-e2e's throttled node is
    /// fed by --exec and must be moved; a keyed 1 GiB stream through the default memory spool, about 537 MB of sealed
    /// frames, could lose a node moved early: open).
    /// </summary>
    public static bool SpoolKeeps(long keeps, long total, long offset) =>
        keeps < 0 || total < 0 || total + total / 100 + (1 << 20) - offset <= keeps;

    /// <summary>How far back a node's own sink having held its ring counts as "sink-bound now" (besides the delay).</summary>
    public static readonly TimeSpan SinkBoundLookback = TimeSpan.FromSeconds(5);

    /// <summary>
    /// The node to move (<see cref="SlowNodeDecision.Move"/>, or -1), and the first node that looked slow but is not
    /// moved, with why (for one log line: an operator who sees a slow node stay in place learns the reason). A node is
    /// slow when its own sink has held its ring full for at least <paramref name="after"/> while taking less than half of
    /// <paramref name="treeRate"/> (bytes per second).
    /// </summary>
    /// <param name="nodes">Every node of the session, in any order.</param>
    /// <param name="treeRate">What the tree has shown it can move, bytes per second (0 = not measured yet).</param>
    /// <param name="now">Environment.TickCount64 of this check.</param>
    /// <param name="after">How long a hold must last (zero or less: moves are off).</param>
    /// <param name="noSpool">The server keeps no spool (<c>--spool none</c>): a moved node could not be fed afterwards.</param>
    public static SlowNodeDecision Decide(ReadOnlySpan<SlowNodeView> nodes, double treeRate, long now, TimeSpan after, bool noSpool)
    {
        var none = new SlowNodeDecision(-1, -1, "");
        if (after <= TimeSpan.Zero || noSpool || treeRate <= 0) return none;
        // A few slow nodes are what a move is for; when more than a quarter hold the tree in turn, the limit is the
        // nodes themselves (every CPU or disk is slower than the network), and moving more would only feed them last.
        int moved = 0, receiving = 0;
        foreach (var n in nodes)
        {
            if (n.Moved) moved++;
            if (n.Receiving) receiving++;
        }
        if (moved >= Math.Max(1, nodes.Length / 4)) return none;
        // A move frees the nodes that wait on the slow one (its subtree, and through its parent's ring the rest) and
        // feeds it last: it pays only while another node still receives the main stream. A lone node, or the last one
        // still receiving at the end of a session, would be moved for nothing and then fed from the spool at the
        // same speed (issue 14's bench: a lone node whose disk was slower than loopback was moved).
        if (receiving < 2) return none;
        // Whose own sink held its ring lately: one or a few is what a move is for; more than a quarter means the nodes
        // themselves are the limit (eight nodes starved on two cores each hold the tree in turn, and the best second any
        // of them had makes the rest look slow: the keyed bench moved them, and a move then lost an orphan).
        long lookback = (long)(SinkBoundLookback + after).TotalMilliseconds;
        int sinkBound = 0;
        foreach (var n in nodes)
            if (n.Receiving && n.SinkHeldAt != 0 && now - n.SinkHeldAt <= lookback) sinkBound++;
        bool starved = sinkBound > Math.Max(1, nodes.Length / 4);
        var declined = none;
        for (int i = 0; i < nodes.Length; i++)
        {
            var n = nodes[i];
            if (!n.Receiving || n.HeldSince == 0) continue;
            double held = (now - n.HeldSince) / 1000.0;
            if (held < after.TotalSeconds) continue;
            double rate = n.TakenWhileHeld / held;
            // Taking nothing at all is hung, not slow: the stall watch's case.
            if (rate <= 0 || rate * 2 >= treeRate) continue;
            string why = $"its own sink held its buffer full for {held:0.0} s, taking {rate / 1e6:0.0} MB/s where the tree moves {treeRate / 1e6:0.0} MB/s";
            // Moved, it is fed last, from the spool: one whose offset the spool will have let go by then would fail.
            // Its children re-attach first: one whose offset nobody holds any more would be lost.
            string? stay = !n.SpoolKeepsIt ? "the spool may let its offset go before it would be fed from there"
                : !n.OrphansHeld ? "the offset of a child of it is no longer held by the server, where a refused orphan goes"
                : starved ? $"{sinkBound} nodes' own sinks held their buffers within {lookback / 1000.0:0} s: the nodes themselves are the limit"
                : null;
            if (stay is null) return new SlowNodeDecision(i, -1, why);
            if (declined.Declined < 0) declined = new SlowNodeDecision(-1, i, $"{why}; not moved: {stay}");
        }
        return declined;
    }
}

/// <summary>What <see cref="SlowNodePolicy.Decide"/> found: the node to move (-1: none), else the first that looked slow but
/// stays (-1: none), and why.</summary>
internal readonly record struct SlowNodeDecision(int Move, int Declined, string Why);
