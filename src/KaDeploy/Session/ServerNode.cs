using System.Net;
using KaDeploy.Protocol;
using KaDeploy.Reporting;
using KaDeploy.Transport;

namespace KaDeploy.Session;

/// <summary>
/// The server's view of one registered client: its control connection, its place in the live tree,
/// what its heartbeats say, its report row and milestones. Tree fields are guarded by the server's gate.
/// </summary>
internal sealed class ServerNode : IAsyncDisposable
{
    private readonly TaskCompletionSource _linked = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _sending;

    public ServerNode(int id, string name, IPAddress address, int dataPort, Connection connection, ControlChannel channel)
    {
        Connection = connection;
        Channel = channel;
        Address = address;
        DataPort = dataPort;
        Report = new NodeReport { Id = id, Name = name, Address = address.ToString(), State = NodeState.Registered };
        Touch();
    }

    public int Id => Report.Id;
    public IPAddress Address { get; }
    public int DataPort { get; }
    public Connection Connection { get; }
    public ControlChannel Channel { get; }
    public NodeReport Report { get; }
    public long ProgressBytes;

    // --- what the heartbeats say
    private long _lastHeard;
    /// <summary>When anything last came from this node (Environment.TickCount64).</summary>
    public long LastHeard => Volatile.Read(ref _lastHeard);
    public void Touch() => Volatile.Write(ref _lastHeard, Environment.TickCount64);
    public long VerifiedOffset;
    public FlowState Flow;
    /// <summary>Since when the node has reported <see cref="FlowState.HeldBySink"/> without a break (0 = not).</summary>
    public long HeldSince;
    /// <summary>The node's verified wire offset when <see cref="HeldSince"/> began: while held, its offset moves only as its sink takes.</summary>
    public long HeldFromOffset;
    /// <summary>Heartbeats in a row that did not say held (one is a sampling blip, not the end of a hold).</summary>
    public int NotHeldBeats;
    /// <summary>Start of the current rate window: when, and the verified offset then.</summary>
    public long RateTick, RateOffset;
    /// <summary>The oldest wire offset its ring held at its last heartbeat (-1: not said): a repair sends it only orphans at or after it.</summary>
    public long RetainedFrom = -1;
    /// <summary>When it last said its own sink held its ring full (Environment.TickCount64; 0 = never).</summary>
    public long SinkHeldAt;
    /// <summary>It looked slow but was not moved, and the log said why (once).</summary>
    public bool SlowDeclined;

    // --- the live tree (under the server's gate)
    /// <summary>Current parent (0 = the server). Changed only through <see cref="NodeTable.SetParent"/>, which keeps the
    /// children index true.</summary>
    public int ParentId { get; internal set; }
    /// <summary>Declared failed: control link lost or silent; never rejoins.</summary>
    public bool Gone;
    /// <summary>Left the tree (gone, or its own sink failed): its children were re-attached elsewhere.</summary>
    public bool Detached;
    /// <summary>Moved off the main tree for being slow (fed from the spool once the others are served).</summary>
    public bool Moved;
    /// <summary>A repair in progress for this node: why, and when it was detected (for the report).</summary>
    public (string Reason, long Since, int NewParent)? PendingRepair;

    /// <summary>Completes when the node's upstream link is up (or it failed).</summary>
    public Task Linked => _linked.Task;

    /// <summary>Completes when the node has given its verdict, or is known to be lost.</summary>
    public Task Finished => _finished.Task;

    public bool IsFinished => _finished.Task.IsCompleted;

    public void MarkLinked()
    {
        lock (Report) if (Report.State == NodeState.Planned) Report.State = NodeState.Linked;
        _linked.TrySetResult();
    }

    public void MarkDone(Done done)
    {
        lock (Report)
        {
            if (IsFinished) return;
            Report.Verified = done.Verified;
            Report.State = done.Verified ? NodeState.Verified : NodeState.Failed;
            Report.WireBytes = done.WireBytes;
            Report.PayloadBytes = done.PayloadBytes;
            Report.Seconds = done.ElapsedMilliseconds / 1000.0;
            Report.Message = done.Message;
        }
        _linked.TrySetResult();
        _finished.TrySetResult();
    }

    /// <summary>Records the first reason this node failed; later reasons are ignored. The node's own figures stay.</summary>
    public void Fail(string reason, double sessionSeconds = 0)
    {
        lock (Report)
        {
            if (IsFinished) return;
            Report.State = NodeState.Failed;
            Report.Verified = false;
            Report.WireBytes = Math.Max(Report.WireBytes, Volatile.Read(ref VerifiedOffset));
            Report.PayloadBytes = Math.Max(Report.PayloadBytes, Volatile.Read(ref ProgressBytes));
            if (Report.Seconds == 0) Report.Seconds = sessionSeconds;
            if (Report.Message.Length == 0) Report.Message = reason;
        }
        _linked.TrySetResult();
        _finished.TrySetResult();
    }

    private readonly TaskCompletionSource _welcomed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>
    /// The Welcome has gone out (or failed to): only now may anything else be sent. The node is counted before its
    /// Welcome is written, so the last node's registration can start the session, and a heartbeat or the Plan could
    /// otherwise overtake this node's Welcome ("got Plan while Welcome was expected", seen on a loaded machine).
    /// </summary>
    public void MarkWelcomed() => _welcomed.TrySetResult();

    /// <summary>Sends (after the Welcome), ignoring a link that is already gone (its loss is reported by the reader loop).</summary>
    public async Task TrySendAsync(ControlMessage message, CancellationToken ct)
    {
        try
        {
            await _welcomed.Task.WaitAsync(ct).ConfigureAwait(false);
            await Channel.SendAsync(message, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (ConnectionErrors.IsLinkFailure(e) || e is OperationCanceledException) { }
    }

    /// <summary>
    /// A heartbeat that never queues behind another: if the previous one is still stuck (a stopped
    /// node no longer reads), this one is skipped; the node's silence is detected by its own missing heartbeats.
    /// </summary>
    public void SendHeartbeat(CancellationToken ct)
    {
        if (Interlocked.Exchange(ref _sending, 1) != 0) return;
        _ = Task.Run(async () =>
        {
            try { await TrySendAsync(new Heartbeat(0, FlowState.Flowing), ct).ConfigureAwait(false); }
            finally { Volatile.Write(ref _sending, 0); }
        }, CancellationToken.None);
    }

    public async ValueTask DisposeAsync()
    {
        Connection.Abort("session over");
        await Channel.DisposeAsync().ConfigureAwait(false);
    }
}
