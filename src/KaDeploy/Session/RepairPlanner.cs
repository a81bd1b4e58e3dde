namespace KaDeploy.Session;

/// <summary>A node (or the server, id 0) that could serve an orphan, as the server last heard of it.</summary>
/// <param name="Id">Node id; 0 = the server.</param>
/// <param name="RetainedFrom">The oldest wire offset it still holds (-1: not known, assumed held as before nodes said it).</param>
/// <param name="Slack">How far past <paramref name="RetainedFrom"/> an offset must lie to be counted held: what the holder may
/// let go of between this view and the orphan's hello.</param>
internal readonly record struct HolderView(int Id, long RetainedFrom, long Slack)
{
    /// <summary>Whether it will still hold <paramref name="offset"/> when the orphan asks. One that has let nothing go yet
    /// (the server's spool early on, a young ring) holds everything it has.</summary>
    public bool Holds(long offset) =>
        RetainedFrom < 0 || RetainedFrom == 0 || offset >= RetainedFrom + Slack;
}

/// <summary>An orphan to place: where it will resume (at least: its offset only grows), and its own ring as a parent
/// for its siblings.</summary>
internal readonly record struct OrphanView(int Id, long Offset, long RetainedFrom, int Children);

/// <summary>
/// Where the orphans of a node that left the tree (failed, or moved for being slow) re-attach: a pure function of the
/// server's view, so the rule is tested with the offsets of a real failure and no session. An orphan goes only to a
/// parent that still holds its offset (the nearest ancestor that does, up to the server and its spool); the bench's
/// "cannot resume at offset 401965200 ... (buffer from 411389856 at best)" was an orphan sent to its grandparent while
/// the grandparent's ring had moved 9.4 MB past it.
/// </summary>
internal static class RepairPlanner
{
    /// <summary>Slack for a node's ring: its heartbeat is up to half a second old, and a refusal still falls back to
    /// the server, so a MiB (sixteen frames) is enough to avoid sending an orphan where it will surely be refused.</summary>
    public const long NodeSlack = 1L << 20;

    /// <summary>Slack for the server's ring: a MiB and two seconds of the tree's speed (the server is the last resort:
    /// an orphan it cannot serve when it asks is lost).</summary>
    public static long ServerSlack(double treeRate) => NodeSlack + (long)(Math.Max(0, treeRate) * 2);

    /// <summary>
    /// The new parent of each orphan, or -1 where no holder holds its offset. <paramref name="orphans"/> come most
    /// advanced first: that one takes the lost node's place under the nearest holder of its offset; its siblings go under
    /// it while it has room in the arity and holds their offsets (so no parent ends up with more children than before),
    /// else under the nearest holder of theirs.
    /// </summary>
    /// <param name="orphans">The lost node's children, most advanced first.</param>
    /// <param name="holders">The lost node's live ancestors, nearest first, ending with the server.</param>
    /// <param name="arity">The tree's arity.</param>
    public static int[] Place(ReadOnlySpan<OrphanView> orphans, ReadOnlySpan<HolderView> holders, int arity)
    {
        var parents = new int[orphans.Length];
        if (orphans.IsEmpty) return parents;
        var promoted = orphans[0];
        parents[0] = FirstHolder(holders, promoted.Offset);
        // The promoted orphan is itself resuming: its ring stands still until it re-links, so no slack beyond a node's.
        var asParent = new HolderView(promoted.Id, promoted.RetainedFrom, NodeSlack);
        int room = Math.Max(1, arity) - promoted.Children;
        for (int i = 1; i < orphans.Length; i++)
        {
            if (parents[0] >= 0 && room > 0 && asParent.Holds(orphans[i].Offset))
            {
                parents[i] = promoted.Id;
                room--;
            }
            else parents[i] = FirstHolder(holders, orphans[i].Offset);
        }
        return parents;
    }

    /// <summary>The nearest holder of <paramref name="offset"/>, or -1.</summary>
    public static int FirstHolder(ReadOnlySpan<HolderView> holders, long offset)
    {
        foreach (var h in holders)
            if (h.Holds(offset)) return h.Id;
        return -1;
    }
}
