using KaDeploy.Protocol;
using KaDeploy.Reporting;

namespace KaDeploy.Session;

/// <summary>
/// Repair (issue 8): the server keeps the live tree. A node silent for --failure-timeout (dead,
/// stopped, cut off) or whose control link drops is declared failed; its parent is told to drop it,
/// and each of its children is re-attached to the nearest live ancestor (which first gets
/// <see cref="Adopt"/>) or to the server. An orphan resumes at the offset it verified; if its new
/// parent no longer holds it, the orphan says <see cref="ResumeFailed"/> and the server serves it from
/// its spool. A node whose own copy failed leaves the tree the same way; a node whose own sink holds
/// the tree back is moved onto a branch of its own, fed from the spool once the others are served.
/// </summary>
public sealed partial class DeployServer
{
    private static readonly TimeSpan HeartbeatInterval = TimeSpan.FromMilliseconds(500);
    private Session.ChildLinks? _links;
    private readonly TaskCompletionSource _mainServed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _produced;

    private double Now => _clock.Elapsed.TotalSeconds;

    /// <summary>The registered nodes as the server sees them now (tests read their heartbeat offsets).</summary>
    internal IReadOnlyList<ServerNode> Nodes
    {
        get { lock (_gate) return _nodes.ToArray(); }
    }

    private ServerNode? Find(int id)
    {
        lock (_gate) return _nodes.Find(id);
    }

    // Heartbeats out every 0.5 s, silence detection, slow-node moves, and "has everyone but the moved nodes got it all".
    private async Task WatchNodesAsync(CancellationToken ct)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(100));
        long lastBeat = 0;
        try
        {
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
            {
                ServerNode[] nodes;
                bool started;
                lock (_gate) { nodes = _nodes.ToArray(); started = _started; }
                long now = Environment.TickCount64;
                bool beat = now - lastBeat >= HeartbeatInterval.TotalMilliseconds;
                if (beat) lastBeat = now;
                foreach (var n in nodes)
                {
                    if (n.Gone) continue;
                    long silent = now - n.LastHeard;
                    // Before the start nothing is lost by waiting: a node busy booting is not dropped for 3 s of silence.
                    if (silent >= (started ? _options.FailureTimeout.TotalMilliseconds : Math.Max(_options.FailureTimeout.TotalMilliseconds, 30_000)))
                    {
                        NodeLost(n, $"no heartbeat for {silent / 1000.0:0.0} s");
                        continue;
                    }
                    if (beat) n.SendHeartbeat(ct);
                }
                if (!started) continue;
                CheckSlowNodes(nodes, now);
                if (_produced && !_mainServed.Task.IsCompleted
                    && nodes.All(n => n.Gone || n.Moved || n.IsFinished || n.Flow == FlowState.Complete))
                    _mainServed.TrySetResult();
            }
        }
        catch (OperationCanceledException) { }
    }

    /// <summary>Declares a node failed (once): aborts its control link, has its parent drop it, re-attaches its children.</summary>
    private void DeclareGone(ServerNode node, string reason)
    {
        int parent;
        lock (_gate)
        {
            if (node.Gone) return;
            node.Gone = node.Detached = true;
            parent = node.ParentId;
        }
        bool wasFinished = node.IsFinished;
        if (!wasFinished)
        {
            Log($"node {node.Id} {node.Report.Name} declared failed: {reason}");
            node.Fail($"declared failed: {reason}", Now);
        }
        else if (node.Report.Verified) Log($"node {node.Id} {node.Report.Name} has left ({reason})");
        // Say why before closing: a stopped node that wakes up reads this first and exits with the reason.
        _ = Task.Run(async () =>
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(500));
            if (!wasFinished) await node.TrySendAsync(new Abort($"this node was declared failed: {reason}"), cts.Token).ConfigureAwait(false);
            node.Connection.Abort(reason);
        });
        // A node that finished (its copy verified or failed on its own) and then closed its link has left; only one that
        // vanished mid-stream was declared failed, and its parent's log and its children's must not say otherwise.
        string what = wasFinished ? $"node {node.Id} left ({reason})" : $"node {node.Id} declared failed: {reason}";
        if (_started) DropFromParent(parent, node.Id, what);
        RepairChildrenOf(node, "parent " + what);
    }

    private void DropFromParent(int parentId, int childId, string reason)
    {
        if (parentId == 0) _links?.Drop(childId, reason);
        else if (Find(parentId) is { Gone: false } p) _ = p.TrySendAsync(new DropChild(childId, reason), CancellationToken.None);
    }

    /// <summary>A node whose own copy failed leaves the tree once its children are re-attached.</summary>
    private void LeaveTree(ServerNode node, string why)
    {
        int parent;
        lock (_gate)
        {
            if (node.Detached) return;
            node.Detached = true;
            parent = node.ParentId;
        }
        RepairChildrenOf(node, $"parent node {node.Id} left the tree: {why}");
        DropFromParent(parent, node.Id, $"node {node.Id} left the tree: {why}");
        _ = node.TrySendAsync(new Release(), CancellationToken.None);
    }

    private int NearestLiveAncestorLocked(ServerNode node)
    {
        int p = node.ParentId;
        while (p != 0 && _nodes.Find(p) is { Detached: true } gone) p = gone.ParentId;
        return p;
    }

    private void RepairChildrenOf(ServerNode node, string why)
    {
        var moves = new List<(ServerNode Orphan, int NewParent)>();
        lock (_gate)
        {
            if (!_started) return;
            int anc = NearestLiveAncestorLocked(node);
            var orphans = OrphansOfLocked(node);
            // The most advanced orphan takes the failed node's place under the nearest ancestor that still holds its offset;
            // its siblings go under it while it has room in the tree's arity, so no parent ends up sending to more children
            // than it did before (RepairPlanner). An orphan whose offset nobody holds goes to the nearest ancestor as
            // before: refused there, it asks the server, which serves it from its spool or fails it with the reason.
            var placed = RepairPlanner.Place(OrphanViewsLocked(orphans), HoldersLocked(node), _options.Arity);
            for (int i = 0; i < orphans.Count; i++)
            {
                var o = orphans[i];
                int newParent = placed[i] >= 0 ? placed[i] : anc;
                _nodes.SetParent(o, newParent);
                o.PendingRepair = (why, Environment.TickCount64, newParent);
                moves.Add((o, newParent));
            }
        }
        foreach (var (o, newParent) in moves) _ = ReattachAsync(o, newParent, why);
    }

    // A node's children still in the tree, most advanced first (the offsets only grow: an older view is on the safe side).
    private List<ServerNode> OrphansOfLocked(ServerNode node)
    {
        var orphans = _nodes.ChildrenOf(node.Id).Where(n => !n.Gone && !n.Detached).ToList();
        orphans.Sort((a, b) => Volatile.Read(ref b.VerifiedOffset).CompareTo(Volatile.Read(ref a.VerifiedOffset)));
        return orphans;
    }

    private OrphanView[] OrphanViewsLocked(List<ServerNode> orphans) =>
        [.. orphans.Select(o => new OrphanView(o.Id, Volatile.Read(ref o.VerifiedOffset), Volatile.Read(ref o.RetainedFrom),
            _nodes.ChildrenOf(o.Id).Count(n => !n.Gone && !n.Detached)))];

    // Who could serve the orphans of a node: its live ancestors on the main tree, nearest first, then the server (its ring
    // and spool, read now; a node's ring as its last heartbeat said).
    private HolderView[] HoldersLocked(ServerNode node)
    {
        var holders = new List<HolderView>();
        int p = node.ParentId;
        while (p != 0 && _nodes.Find(p) is { } a)
        {
            if (!a.Detached && !a.Moved) holders.Add(new HolderView(a.Id, Volatile.Read(ref a.RetainedFrom), RepairPlanner.NodeSlack));
            p = a.ParentId;
        }
        holders.Add(ServerHolderLocked());
        return [.. holders];
    }

    private HolderView ServerHolderLocked() => new(0, _links?.HeldFrom ?? -1, RepairPlanner.ServerSlack(_treeRate));

    private async Task ReattachAsync(ServerNode orphan, int newParent, string why)
    {
        if (orphan.IsFinished && orphan.Report.Verified && orphan.Flow == FlowState.Complete) return;
        Log($"node {orphan.Id}: {why}; re-attaching to {(newParent == 0 ? "the server" : $"node {newParent}")}");
        if (newParent == 0)
        {
            _links?.Expect(orphan.Id);
            await orphan.TrySendAsync(new Reattach(0, "", DataPort), CancellationToken.None).ConfigureAwait(false);
            return;
        }
        var parent = Find(newParent)!;
        // Adopt goes out first; the new parent also waits a moment for it if the orphan's hello wins the race.
        await parent.TrySendAsync(new Adopt(orphan.Id), CancellationToken.None).ConfigureAwait(false);
        await orphan.TrySendAsync(new Reattach(parent.Id, parent.Address.ToString(), parent.DataPort), CancellationToken.None).ConfigureAwait(false);
    }

    // LinkUp after a Reattach: the repair is complete; it goes into the node's report.
    private void Relinked(ServerNode node)
    {
        (string Reason, long Since, int NewParent)? pending;
        lock (_gate)
        {
            pending = node.PendingRepair;
            node.PendingRepair = null;
        }
        if (pending is not { } p) return;
        double seconds = (Environment.TickCount64 - p.Since) / 1000.0;
        long offset = Volatile.Read(ref node.VerifiedOffset);
        lock (node.Report)
            node.Report.Repairs.Add(new RepairRecord { Reason = p.Reason, Offset = offset, NewParentId = p.NewParent, Seconds = seconds, At = Now - seconds });
        Log($"node {node.Id} re-attached to {(p.NewParent == 0 ? "the server" : $"node {p.NewParent}")} at offset {offset} after {seconds:0.00} s");
    }

    private void ChildLinkLost(ServerNode parent, int childId, string reason)
    {
        var child = Find(childId);
        if (child is null || child.Gone || child.ParentId != parent.Id) return; // already repaired or moved
        // Reported only for a child given up as hung (it held the ring full and took nothing): it still
        // heartbeats, but its sink is stuck. It fails with that reason; its own children move on.
        Log($"{(parent.Id == 0 ? "the server" : $"node {parent.Id}")} gave up its link to node {childId}: {reason}");
        string why = $"link from {(parent.Id == 0 ? "the server" : $"node {parent.Id}")} lost: {reason}";
        child.Fail(why, Now);
        LeaveTree(child, why);
    }

    // The new parent could not serve the orphan's offset (or could not be reached): the server serves it
    // from its spool; if the server cannot either, the node fails with the reason and its own children move on.
    private void ResumeFailedAt(ServerNode node, ResumeFailed r)
    {
        Log($"node {node.Id} could not resume at offset {r.Offset} from {(r.ParentId == 0 ? "the server" : $"node {r.ParentId}")}: {r.Reason}");
        if (r.ParentId == 0)
        {
            string why = $"cannot resume at offset {r.Offset}: {r.Reason}";
            node.Fail(why, Now);
            LeaveTree(node, why);
            _ = node.TrySendAsync(new Abort(why), CancellationToken.None);
            return;
        }
        int old;
        lock (_gate)
        {
            old = node.ParentId;
            _nodes.SetParent(node, 0);
            var reason = node.PendingRepair?.Reason ?? $"link from node {r.ParentId} lost ({r.Reason})";
            node.PendingRepair = (reason, node.PendingRepair?.Since ?? Environment.TickCount64, 0);
        }
        if (old != 0) DropFromParent(old, node.Id, $"node {node.Id} re-attached to the server");
        _links?.Expect(node.Id);
        _ = node.TrySendAsync(new Reattach(0, "", DataPort), CancellationToken.None);
    }

    // What a heartbeat says: the node's offset, whether its own sink holds its ring full (a blip of one beat does not end
    // a hold: the ring is sampled, and a full ring's producer is briefly not waiting each time the sink frees a slot),
    // and the tree's speed, the best rate any node's offset moved at over a second since the last move.
    private void HeartbeatFrom(ServerNode node, Heartbeat h)
    {
        long now = Environment.TickCount64;
        Volatile.Write(ref node.VerifiedOffset, h.VerifiedOffset);
        if (h.State == FlowState.HeldBySink)
        {
            node.NotHeldBeats = 0;
            if (node.HeldSince == 0) { node.HeldSince = now; node.HeldFromOffset = h.VerifiedOffset; }
        }
        else if (++node.NotHeldBeats >= 2) node.HeldSince = 0;
        node.Flow = h.State;
        if (h.State == FlowState.HeldBySink) node.SinkHeldAt = now;
        if (h.RetainedFrom >= 0) Volatile.Write(ref node.RetainedFrom, h.RetainedFrom);
        if (node.RateTick == 0 || node.RateTick < Volatile.Read(ref _rateEpoch)) (node.RateTick, node.RateOffset) = (now, h.VerifiedOffset);
        else if (now - node.RateTick >= 1000)
        {
            double rate = (h.VerifiedOffset - node.RateOffset) * 1000.0 / (now - node.RateTick);
            lock (_gate) if (rate > _treeRate) _treeRate = rate;
            (node.RateTick, node.RateOffset) = (now, h.VerifiedOffset);
        }
    }

    private double _treeRate;
    // The last wire bytes the spool keeps after the stream's end (-1: all of them, a file spool); set with the spool.
    private long _spoolKeeps = -1;
    private long _rateEpoch;

    /// <summary>
    /// Moves a slow node off the tree (<see cref="SlowNodePolicy"/> decides which). Relative on purpose: when every disk
    /// is slower than the network, the slowest node holds the tree, but moving it would gain little; after one move the
    /// tree's speed is measured again, so the next slowest, no slower than the rest, stays.
    /// </summary>
    private void CheckSlowNodes(ServerNode[] nodes, long now)
    {
        if (_links is null || _mainServed.Task.IsCompleted) return;
        double tree;
        lock (_gate) tree = _treeRate;
        long total = Interlocked.Read(ref _estimatedTotal), keeps = Volatile.Read(ref _spoolKeeps);
        var views = new SlowNodeView[nodes.Length];
        lock (_gate)
        {
            var server = ServerHolderLocked();
            for (int i = 0; i < nodes.Length; i++)
            {
                var n = nodes[i];
                long offset = Volatile.Read(ref n.VerifiedOffset);
                bool kept = SlowNodePolicy.SpoolKeeps(keeps, total, offset);
                // Its children re-attach to the nearest holder of their offsets; the server is where a refused one ends up,
                // so a move waits until the server holds every child's offset (no move can then strand one).
                bool orphansHeld = n.HeldSince == 0 || OrphansOfLocked(n).TrueForAll(o => server.Holds(Volatile.Read(ref o.VerifiedOffset)));
                views[i] = new SlowNodeView(n.Detached, n.Moved, n.IsFinished, n.Flow == FlowState.Complete, n.HeldSince,
                    offset - n.HeldFromOffset, kept, orphansHeld, n.SinkHeldAt);
            }
        }
        var d = SlowNodePolicy.Decide(views, tree, now, _options.SlowNodeAfter, _options.NoSpool);
        // Once per node: why a node that looks slow stays where it is.
        if (d.Declined >= 0 && !nodes[d.Declined].SlowDeclined)
        {
            nodes[d.Declined].SlowDeclined = true;
            Log($"node {nodes[d.Declined].Id} {nodes[d.Declined].Report.Name} is slow ({d.Why})");
        }
        int slow = d.Move;
        string why = d.Why;
        if (slow < 0) return;
        lock (_gate) { _treeRate = 0; Volatile.Write(ref _rateEpoch, now); }
        _ = MoveSlowAsync(nodes[slow], why);
    }

    // First its children re-attach to its parent (while it still holds that parent's ring, so their offsets
    // are there), then it is moved onto a branch of its own, fed from the spool once the others are served.
    private async Task MoveSlowAsync(ServerNode node, string why)
    {
        int parent;
        List<ServerNode> orphans;
        lock (_gate)
        {
            if (node.Moved || node.Detached) return;
            node.Moved = true;
            parent = node.ParentId;
            orphans = _nodes.ChildrenOf(node.Id).Where(n => !n.Detached).ToList();
        }
        Log($"node {node.Id} {node.Report.Name} is slow ({why}): moving it off the tree");
        RepairChildrenOf(node, $"parent node {node.Id} moved (slow)");
        using var wait = new CancellationTokenSource(_options.FailureTimeout * 2);
        try
        {
            while (orphans.Any(o => !o.Detached && o.PendingRepair is not null))
                await Task.Delay(50, wait.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) { }
        lock (_gate)
        {
            if (node.Detached) return;
            _nodes.SetParent(node, 0);
            node.PendingRepair = ($"moved: {why}", Environment.TickCount64, 0);
        }
        DropFromParent(parent, node.Id, $"node {node.Id} moved (slow)");
        _links?.Expect(node.Id);
        await node.TrySendAsync(new Moved(why), CancellationToken.None).ConfigureAwait(false);
        await node.TrySendAsync(new Reattach(0, "", DataPort), CancellationToken.None).ConfigureAwait(false);
    }

    // Spool links of moved nodes wait until every other node has the whole stream, so they cost the others nothing.
    private Task SpoolGate(int childId, CancellationToken ct) =>
        Find(childId) is { Moved: true } ? _mainServed.Task.WaitAsync(ct) : Task.CompletedTask;

    private bool SpoolOnly(int childId) => Find(childId) is { Moved: true };
}
