using System.Net;
using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Transport;

namespace KaDeploy.Session;

/// <summary>
/// Accepts the data links of a node's children (the server's or a client's) and runs one
/// <see cref="ChildSender"/> per child. A child proves it belongs to the session with the link key
/// from its plan and must be one of this node's children (planned, or adopted in a repair); anything
/// else gets one line in the log and a closed link. A child resumes from the offset it names: from
/// the ring while it still holds it (or will: a child ahead of a parent that is itself resuming waits),
/// else, at the server, from the spool; otherwise it is refused with the reason.
/// </summary>
internal sealed class ChildLinks
{
    private static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(10);
    private readonly IConnectionListener _listener;
    private readonly IConnectionHandshake _handshake;
    private readonly string _session;
    private readonly RelayRing _ring;
    private readonly byte[] _key;
    private readonly HashSet<int> _expected;
    private readonly Dictionary<int, Connection> _active = [];
    private readonly HashSet<Connection> _dropped = [];
    private readonly Action<string> _log;
    private readonly Action<int, string, bool> _childLost;
    private readonly StreamSpool? _spool;
    private readonly Func<int, CancellationToken, Task>? _spoolGate;
    private readonly Func<int, bool>? _spoolOnly;
    private readonly Action<int, string>? _spoolFailed;
    private TaskCompletionSource _expectedChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly List<Task> _senders = [];
    private readonly object _gate = new();

    public ChildLinks(IConnectionListener listener, IConnectionHandshake handshake, string session, RelayRing ring, byte[] key,
        IEnumerable<int> expected, Action<string> log, Action<int, string, bool> childLost,
        StreamSpool? spool = null, Func<int, CancellationToken, Task>? spoolGate = null, Func<int, bool>? spoolOnly = null,
        Action<int, string>? spoolFailed = null)
    {
        _listener = listener;
        _handshake = handshake;
        _session = session;
        _ring = ring;
        _key = key;
        _expected = [.. expected];
        _log = log;
        _childLost = childLost;
        _spool = spool;
        _spoolGate = spoolGate;
        _spoolOnly = spoolOnly;
        _spoolFailed = spoolFailed;
    }

    /// <summary>The oldest wire offset a child could resume from here: all of it with a file spool, else the ring's oldest frame.</summary>
    public long HeldFrom => _spool is { KeepsLastBytes: null } ? 0 : _ring.RetainedFromOffset;

    /// <summary>Accepts a data link from one more child (repair: an orphan of a failed node).</summary>
    public void Expect(int childId)
    {
        TaskCompletionSource changed;
        lock (_gate)
        {
            _expected.Add(childId);
            changed = _expectedChanged;
            _expectedChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);
        }
        changed.TrySetResult();
    }

    // An orphan's hello can overtake the Adopt that announces it (two connections): give the Adopt a moment.
    private async Task<bool> IsExpectedAsync(int childId, CancellationToken ct)
    {
        var deadline = Environment.TickCount64 + 2000;
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                if (_expected.Contains(childId)) return true;
                changed = _expectedChanged.Task;
            }
            long left = deadline - Environment.TickCount64;
            if (left <= 0) return false;
            try { await changed.WaitAsync(TimeSpan.FromMilliseconds(left), ct).ConfigureAwait(false); }
            catch (TimeoutException) { return false; }
        }
    }

    /// <summary>Stops serving a child (declared failed, or moved elsewhere): its link is aborted with the reason, and not reported as lost.</summary>
    public void Drop(int childId, string reason)
    {
        Connection? link;
        lock (_gate)
        {
            _expected.Remove(childId);
            if (_active.Remove(childId, out link)) _dropped.Add(link);
        }
        link?.Abort(reason);
    }

    /// <summary>Accepts until cancelled or the listener is closed.</summary>
    public async Task AcceptAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            Connection connection;
            try { connection = await _listener.AcceptAsync(ct).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            catch (ObjectDisposedException) { return; }
            catch (Exception e) when (ConnectionErrors.IsLinkFailure(e)) { _log($"data accept failed: {ConnectionErrors.Describe(e)}"); continue; }
            _ = HandshakeAsync(connection, ct);
        }
    }

    /// <summary>Waits for every sender started so far to finish (each ends at the End frame or at its link's failure).</summary>
    public Task WhenSendersDoneAsync()
    {
        lock (_gate) return Task.WhenAll(_senders);
    }

    private async Task HandshakeAsync(Connection connection, CancellationToken ct)
    {
        IPEndPoint remote = connection.RemoteEndPoint;
        try
        {
            (connection, _) = await _handshake.AcceptAsync(connection, ChannelKind.Data, _session, ct).ConfigureAwait(false);
            var channel = Security.ConnectionChannels.OpenControlChannel(connection);
            var hello = await Links.WithTimeout(t => channel.ExpectAsync<DataHello>(t), HandshakeTimeout, "a data-link hello", ct).ConfigureAwait(false);
            string? refusal =
                hello.Version != ProtocolConstants.Version ? $"protocol version {hello.Version}, expected {ProtocolConstants.Version}" :
                !CryptographicOperations.FixedTimeEquals(hello.LinkKey, _key) ? "wrong link key (not of this session)" :
                !await IsExpectedAsync(hello.NodeId, ct).ConfigureAwait(false) ? $"node {hello.NodeId} is not a child of this node" : null;
            RingCursor? cursor = null;
            long skipBelow = 0;
            bool fromSpool = false;
            if (refusal is null)
            {
                long offset = hello.ResumeOffset;
                bool spoolOnly = _spool is not null && _spoolOnly?.Invoke(hello.NodeId) == true;
                long? sequence = spoolOnly ? null : _ring.FindSequence(offset);
                if (sequence is null && !spoolOnly && offset > _ring.NextOffset && !_ring.IsComplete
                    && offset - _ring.NextOffset <= (long)_ring.SlotCount * ProtocolConstants.MaxChunkPayload)
                {
                    // The child is ahead of us (we are resuming too), by less than a buffer: serve from where we
                    // stand, skipping what it has. Further ahead is not a child of this stream's path.
                    sequence = _ring.Published;
                    skipBelow = offset;
                }
                if (sequence is { } s)
                {
                    try { cursor = _ring.Attach($"child {hello.NodeId}", s); }
                    catch (KaDeployException) { cursor = null; }
                    // Older than the window: from the retained frames, which at the server are its memory spool.
                    fromSpool = cursor is not null && _spool is not null && s < _ring.Published - _ring.WindowSlots;
                }
                if (cursor is null)
                {
                    if (_spool is not null && _spool.CannotServe(offset) is null) fromSpool = true;
                    else refusal = $"cannot resume at offset {offset}: no longer held here (buffer from {_ring.NextOffset - (long)_ring.SlotCount * ProtocolConstants.MaxChunkPayload} at best){(_spool?.CannotServe(offset) is { } why ? "; spool: " + why : "")}";
                }
            }
            if (refusal is not null)
            {
                _log($"refused data link from {remote}: {refusal}");
                await channel.SendAsync(new Refuse(refusal), ct).ConfigureAwait(false);
                connection.Abort("refused: " + refusal);
                return;
            }
            Connection? replaced;
            lock (_gate)
            {
                _active.Remove(hello.NodeId, out replaced);
                if (replaced is not null) _dropped.Add(replaced);
                _active[hello.NodeId] = connection;
            }
            replaced?.Abort($"node {hello.NodeId} opened a new link");
            // Counted as a sender before the child hears DataAccept: a node that has its whole stream waits for its
            // senders before it leaves, and a child told "accepted" must be among them. (Counted after the accept, a
            // node whose stream ended in between left at once and closed the link it had just accepted: seen as
            // "closed the link in a frame header (after 0 bytes)" in IntegrityTests at load 10-30.)
            var sender = new TaskCompletionSource<Task>(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_gate) _senders.Add(sender.Task.Unwrap());
            Task? run = null;
            try
            {
                await channel.SendAsync(new DataAccept(), ct).ConfigureAwait(false);
                if (hello.ResumeOffset > 0) _log($"node {hello.NodeId} resumes at offset {hello.ResumeOffset}{(fromSpool ? " from the spool" : "")}");
                if (cursor is null) run = RunSpoolAsync(connection, hello.NodeId, hello.ResumeOffset, ct);
                else
                {
                    var c = cursor!;
                    // A write to a hung child never returns: closing the link is what unblocks it.
                    _ = c.Evicted.ContinueWith(t => connection.Abort(t.Result), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                    run = RunSenderAsync(new ChildSender(c, connection.Stream, skipBelow), c, hello.NodeId, connection, ct);
                }
            }
            finally
            {
                sender.SetResult(run ?? Task.CompletedTask);
                // Not started (the accept could not be sent): let go of the ring, or the slots kept for this child would
                // hold the whole node back until the stall watch gave up on it.
                if (run is null) cursor?.Dispose();
            }
        }
        catch (Exception e) when (ConnectionErrors.IsLinkFailure(e) || e is KaDeployException or OperationCanceledException)
        {
            if (e is not OperationCanceledException || !ct.IsCancellationRequested)
                _log($"rejected data link from {remote}: {ConnectionErrors.Describe(e)}");
            connection.Abort("handshake failed: " + ConnectionErrors.Describe(e));
        }
    }

    private Task RunSenderAsync(ChildSender sender, RingCursor cursor, int childId, Connection connection, CancellationToken ct) =>
        RunLinkAsync(childId, connection, t => sender.RunAsync(t), () => cursor.EvictedReason, ct);

    private Task RunSpoolAsync(Connection connection, int childId, long offset, CancellationToken ct) =>
        RunLinkAsync(childId, connection, async t =>
        {
            if (_spoolGate is not null) await _spoolGate(childId, t).ConfigureAwait(false);
            try { await _spool!.ServeAsync(connection.Stream, offset, t).ConfigureAwait(false); }
            catch (SourceChangedException e) { _spoolFailed?.Invoke(childId, e.Message); throw; }
        }, () => null, ct);

    private async Task RunLinkAsync(int childId, Connection connection, Func<CancellationToken, Task> send, Func<string?> evicted, CancellationToken ct)
    {
        try
        {
            await send(ct).ConfigureAwait(false);
            // Half-close and wait for the child to close its side: the End frame is then surely delivered
            // before this node (or server) goes away.
            connection.ShutdownSend();
            var drain = new byte[64];
            using var wait = CancellationTokenSource.CreateLinkedTokenSource(ct);
            wait.CancelAfter(TimeSpan.FromMinutes(10));
            while (await connection.Stream.ReadAsync(drain, wait.Token).ConfigureAwait(false) > 0) { }
            connection.Abort("stream delivered");
        }
        catch (Exception e) when (ConnectionErrors.IsLinkFailure(e) || e is KaDeployException or OperationCanceledException)
        {
            string reason = evicted() ?? connection.AbortReason ?? ConnectionErrors.Describe(e);
            connection.Abort(reason);
            bool dropped;
            lock (_gate)
            {
                dropped = _dropped.Remove(connection);
                if (_active.TryGetValue(childId, out var current) && current == connection) _active.Remove(childId);
            }
            if (!ct.IsCancellationRequested && !dropped) _childLost(childId, reason, evicted() is not null);
        }
    }
}
