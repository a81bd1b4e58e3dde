using System.Diagnostics;
using KaDeploy.Reporting;
using KaDeploy.Topology;

namespace KaDeploy.Session;

// What the operator sees while the session runs: snapshots for the live view and the event stream, each node's
// place in the tree, and the bounded progress samples and events the report keeps for its timeline.
public sealed partial class DeployServer
{
    private volatile string _phase = "waiting";
    private long _estimatedTotal = -1;

    /// <summary>The session as it is now (cheap; safe from any thread).</summary>
    public SessionSnapshot Snapshot()
    {
        ServerNode[] nodes;
        lock (_gate) nodes = _nodes.ToArray();
        var rows = new NodeSnapshot[nodes.Length];
        for (int i = 0; i < nodes.Length; i++)
        {
            var n = nodes[i];
            lock (n.Report)
            {
                var r = n.Report;
                long bytes = r.State is NodeState.Verified || (r.State is NodeState.Failed && r.PayloadBytes > 0) ? r.PayloadBytes : Volatile.Read(ref n.ProgressBytes);
                rows[i] = new NodeSnapshot(r.Id, r.Name, r.Address, r.Place, r.State, bytes, r.Message);
            }
        }
        long total = Interlocked.Read(ref _estimatedTotal);
        return new SessionSnapshot(_options.Session, _phase, _clock.Elapsed.TotalSeconds, _options.Clients, _options.Arity,
            _producedDigest?.Length64 ?? 0, total > 0 ? total : null, rows);
    }

    /// <summary>
    /// Names every node's place: in a chain its position ("3" = third from the server); in a tree the path of child
    /// indexes from the server ("1.2" = second child of the server's first child), so an operator can find it.
    /// </summary>
    internal static void AssignPlaces(IReadOnlyList<NodePlacement> placements, IReadOnlyDictionary<int, ServerNode> byId, int arity)
    {
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        var byNode = placements.ToDictionary(p => p.Node.NodeId);
        var pending = new Queue<(int Id, string Label)>();
        int root = 0;
        foreach (var p in placements.Where(p => p.ParentId == TreePlanner.ServerId)) pending.Enqueue((p.Node.NodeId, (++root).ToString(inv)));
        while (pending.Count > 0)
        {
            var (id, label) = pending.Dequeue();
            var p = byNode[id];
            string shown = arity == 1 ? p.Depth.ToString(inv) : label;
            lock (byId[id].Report) byId[id].Report.Place = shown;
            for (int i = 0; i < p.ChildIds.Count; i++) pending.Enqueue((p.ChildIds[i], $"{label}.{(i + 1).ToString(inv)}"));
        }
    }

    /// <summary>"node 5 (place 1.2, host)": how log lines name a node once places are known.</summary>
    private string Describe(int id)
    {
        ServerNode? n;
        lock (_gate) n = _nodes.Find(id);
        if (n is null) return $"node {id}";
        return n.Report.Place.Length > 0 ? $"node {id} (place {n.Report.Place}, {n.Report.Name})" : $"node {id} ({n.Report.Name})";
    }

    // Samples every node's progress into its report row (bounded by ProgressHistory) and records failures as
    // events, until the session ends. Polling keeps this off the data path and out of the control loop.
    private async Task RecordProgressAsync(SessionReport report, ServerNode[] nodes, CancellationToken ct)
    {
        var histories = nodes.ToDictionary(n => n.Id, n => new ProgressHistory(n.Report.Samples));
        var seen = nodes.ToDictionary(n => n.Id, _ => NodeState.Planned);
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(250));
        try
        {
            do Sample(false);
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false));
        }
        catch (OperationCanceledException) { }
        Sample(true);

        void Sample(bool last)
        {
            double t = (DateTimeOffset.UtcNow - report.Started).TotalSeconds;
            foreach (var row in Snapshot().Nodes)
            {
                if (!histories.TryGetValue(row.Id, out var h)) continue;
                // A finished node's line ends where it finished: a failed node stays at the bytes it had, not drawn on to the end.
                if (seen[row.Id] is NodeState.Verified or NodeState.Failed) continue;
                bool changed = seen[row.Id] != row.State;
                h.Add(t, row.Bytes, force: last || (changed && row.State is NodeState.Verified or NodeState.Failed));
                if (!changed) continue;
                seen[row.Id] = row.State;
                if (row.State is NodeState.Failed or NodeState.Verified)
                    lock (report.Events) report.Events.Add(new SessionEvent { Seconds = Math.Round(t, 3), Node = row.Id, Kind = row.State.ToString().ToLowerInvariant(), Message = row.Message });
            }
        }
    }
}
