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
internal readonly record struct SlowNodeView(bool Detached, bool Moved, bool Finished, bool Complete, long HeldSince, long TakenWhileHeld,
    bool SpoolKeepsIt = true)
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
    /// as before this check, and a node the spool let go fails with that reason.
    /// </summary>
    public static bool SpoolKeeps(long keeps, long total, long offset) =>
        keeps < 0 || total < 0 || total + total / 100 + (1 << 20) - offset <= keeps;

    /// <summary>
    /// The index of the node to move, or -1. A node is slow when its own sink has held its ring full for at least
    /// <paramref name="after"/> while taking less than half of <paramref name="treeRate"/> (bytes per second).
    /// </summary>
    /// <param name="nodes">Every node of the session, in any order.</param>
    /// <param name="treeRate">What the tree has shown it can move, bytes per second (0 = not measured yet).</param>
    /// <param name="now">Environment.TickCount64 of this check.</param>
    /// <param name="after">How long a hold must last (zero or less: moves are off).</param>
    /// <param name="noSpool">The server keeps no spool (<c>--spool none</c>): a moved node could not be fed afterwards.</param>
    /// <param name="why">For the log: how long it was held and at what rate, against the tree's.</param>
    public static int Pick(ReadOnlySpan<SlowNodeView> nodes, double treeRate, long now, TimeSpan after, bool noSpool, out string why)
    {
        why = "";
        if (after <= TimeSpan.Zero || noSpool || treeRate <= 0) return -1;
        // A few slow nodes are what a move is for; when more than a quarter hold the tree in turn, the limit is the
        // nodes themselves (every CPU or disk is slower than the network), and moving more would only feed them last.
        int moved = 0, receiving = 0;
        foreach (var n in nodes)
        {
            if (n.Moved) moved++;
            if (n.Receiving) receiving++;
        }
        if (moved >= Math.Max(1, nodes.Length / 4)) return -1;
        // A move frees the nodes that wait on the slow one (its subtree, and through its parent's ring the rest) and
        // feeds it last: it pays only while another node still receives the main stream. A lone node, or the last one
        // still receiving at the end of a session, would be moved for nothing and then fed from the spool at the
        // same speed (issue 14's bench: a lone node whose disk was slower than loopback was moved).
        if (receiving < 2) return -1;
        for (int i = 0; i < nodes.Length; i++)
        {
            var n = nodes[i];
            // Moved, it is fed last, from the spool: one whose offset the spool will have let go by then would fail.
            if (!n.Receiving || n.HeldSince == 0 || !n.SpoolKeepsIt) continue;
            double held = (now - n.HeldSince) / 1000.0;
            if (held < after.TotalSeconds) continue;
            double rate = n.TakenWhileHeld / held;
            // Taking nothing at all is hung, not slow: the stall watch's case.
            if (rate <= 0 || rate * 2 >= treeRate) continue;
            why = $"its own sink held its buffer full for {held:0.0} s, taking {rate / 1e6:0.0} MB/s where the tree moves {treeRate / 1e6:0.0} MB/s";
            return i;
        }
        return -1;
    }
}
