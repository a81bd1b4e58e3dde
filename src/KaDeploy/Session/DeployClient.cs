using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using KaDeploy.Payloads;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Reporting;
using KaDeploy.Security;
using KaDeploy.Transport;
using ZstdSharp;

namespace KaDeploy.Session;

/// <summary>
/// One node: registers with the server, links to its parent, and runs three loops over one ring:
/// upstream → ring (<see cref="FrameReceiver"/>), ring → each child (<see cref="ChildSender"/>),
/// ring → local sink. A failing sink does not stop the relay: the children still get everything.
/// Heartbeats go both ways on the control connection every 0.5 s; a server silent for the failure
/// timeout is lost (the copy fails, naming it). A lost parent is replaced by whatever the server says
/// (<see cref="Reattach"/>): the node resumes at the offset its ring has verified.
/// </summary>
public sealed class DeployClient
{
    private static readonly TimeSpan HeartbeatInterval = TimeSpan.FromMilliseconds(500);
    private readonly ClientOptions _options;
    private readonly ITransport _transport;
    private readonly IConnectionHandshake _handshake;

    // Run state, for the control reader, the heartbeat loop and the upstream loop.
    private readonly TaskCompletionSource<Plan> _plan = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<string> _serverLost = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly System.Threading.Channels.Channel<Reattach> _reattach = System.Threading.Channels.Channel.CreateUnbounded<Reattach>();
    private readonly List<int> _adoptedEarly = [];
    private readonly object _gate = new();
    private ControlChannel? _channel;
    private ChildLinks? _links;
    private RelayRing? _ring;
    private RingCursor? _localCursor;
    private UpstreamLink? _upstream; // from the first connect attempt to the end of the stream read from it; under _gate
    private long _lastHeard = Environment.TickCount64;
    private volatile string? _abortReason;
    private volatile bool _complete;

    public DeployClient(ClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
        _transport = options.Transport ?? new TcpTransport(options.DeadPeerTimeout);
        _handshake = options.Handshake ?? new KeyedHandshake(options.Key);
        Heartbeats.ReserveThreads();
    }

    private void Log(string line)
    {
        lock (_options.Log) _options.Log.WriteLine($"ka-deploy client{(NodeId > 0 ? $" {NodeId}" : "")}: {line}");
    }

    /// <summary>This node's id once registered.</summary>
    public int NodeId { get; private set; }

    /// <summary>Sends `go`: tells a waiting server to start with the clients it has.</summary>
    public static async Task<string> SendGoAsync(ClientOptions options, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(options);
        var transport = options.Transport ?? new TcpTransport(options.DeadPeerTimeout);
        var server = await FindServerAsync(options, msg => options.Log.WriteLine("ka-deploy go: " + msg), ct).ConfigureAwait(false);
        var connection = await transport.ConnectAsync(server, options.Bind, ct).ConfigureAwait(false);
        try
        {
            connection = await (options.Handshake ?? new KeyedHandshake(options.Key)).OpenAsync(connection, ChannelKind.Go, options.Session, ct).ConfigureAwait(false);
            var channel = connection.OpenControlChannel();
            await channel.SendAsync(new Hello(ProtocolConstants.Version, HelloRole.Go, options.Session, options.NodeName, "", 1), ct).ConfigureAwait(false);
            var w = await Links.WithTimeout(t => channel.ExpectAsync<Welcome>(t), TimeSpan.FromSeconds(10), "the server's answer", ct).ConfigureAwait(false);
            return $"server {server} starts with {w.Registered} of {w.Expected} client(s)";
        }
        finally
        {
            connection.Abort("done");
        }
    }

    private static async Task<IPEndPoint> FindServerAsync(ClientOptions options, Action<string> log, CancellationToken ct)
    {
        if (options.Server is null)
            return await Discovery.FindServerAsync(options.Session, options.DiscoveryAddress, options.DiscoveryPort, options.Bind, options.ConnectTimeout, options.Key, log, ct).ConfigureAwait(false);
        var (host, port) = Links.ParseHostPort(options.Server, ProtocolConstants.DefaultControlPort);
        return new IPEndPoint(await Links.ResolveAsync(host, ct).ConfigureAwait(false), port);
    }

    /// <summary>Runs until this node's copy is verified or has failed (and, with -w, until released).</summary>
    public async Task<ClientResult> RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            return await RunCoreAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && _abortReason is { } why)
        {
            // The server called the session off: say why, rather than "cancelled".
            throw new KaDeployException($"server aborted: {why}");
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && _serverLost.Task.IsCompleted)
        {
            throw new KaDeployException(_serverLost.Task.Result);
        }
    }

    private async Task<ClientResult> RunCoreAsync(CancellationToken cancellationToken)
    {
        using var runCts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var ct = runCts.Token;
        var server = await FindServerAsync(_options, Log, ct).ConfigureAwait(false);
        using var listener = _transport.Listen(_options.Bind ?? IPAddress.Any, _options.DataPort, "data");
        int dataPort = listener.LocalEndPoint.Port;

        var control = await ConnectWithRetryAsync(server, ct).ConfigureAwait(false);
        await using var closeControl = control;
        control = await _handshake.OpenAsync(control, ChannelKind.Control, _options.Session, ct).ConfigureAwait(false);
        var channel = _channel = control.OpenControlChannel();
        await channel.SendAsync(new Hello(ProtocolConstants.Version, HelloRole.Client, _options.Session, _options.NodeName,
            _options.Bind?.ToString() ?? "", dataPort), ct).ConfigureAwait(false);
        var welcome = await Links.WithTimeout(t => channel.ExpectAsync<Welcome>(t), TimeSpan.FromSeconds(30), "the server's welcome", ct).ConfigureAwait(false);
        NodeId = welcome.NodeId;
        Log($"registered with {server} as node {NodeId} ({welcome.Registered}/{welcome.Expected}); data port {dataPort}");
        Touch();
        // From here on the server hears from us every 0.5 s and we from it; silence either way is a failure.
        var controlReader = ReadControlAsync(channel, server, runCts, ct);
        var beating = HeartbeatAsync(channel, server, ct);
        _ = _serverLost.Task.ContinueWith(t => { if (!_plan.Task.IsCompleted) _plan.TrySetException(new KaDeployException(t.Result)); },
            CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

        Plan plan = await _plan.Task.WaitAsync(ct).ConfigureAwait(false);
        // A keyed node opens every frame with the Plan's stream key; a Plan without one (it cannot come from a
        // server that passed the keyed handshake) would mean accepting clear frames: refused.
        if (_options.Key is not null && plan.StreamKey?.Length != StreamCipher.KeySize)
            throw new KaDeployException("the server's plan carries no stream key: refusing clear data in a keyed session");
        using var streamCipher = plan.Keyed ? await OpenStreamCipherAsync(plan, channel, ct).ConfigureAwait(false) : null;
        var sink = _options.SinkFactory(plan);
        Log($"parent {(plan.ParentId == 0 ? "server" : $"node {plan.ParentId}")}, {plan.ChildIds.Length} child(ren); {plan.Kind} payload, sink: {sink.Description}");

        using var ring = _ring = new RelayRing(_options.BufferBytes, _options.RetainBytes, sealedFrames: streamCipher is not null);
        // A sink blocked in a synchronous read waits on the ring, not on the token: wake it with a fault.
        // Its reason is the node's verdict ("FAILED: upstream failed: ..."): the server's word when it called the session off.
        using var faultOnCancel = ct.Register(() => ring.Fault(new KaDeployException(_abortReason is { } aborted ? $"server aborted: {aborted}"
            : _serverLost.Task.IsCompleted ? _serverLost.Task.Result : "cancelled")));
        _ = _serverLost.Task.ContinueWith(t => ring.Fault(new LinkLostException(t.Result)), CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        var links = new ChildLinks(listener, _handshake, _options.Session, ring, plan.LinkKey, plan.ChildIds, Log,
            (child, reason, hung) =>
            {
                Log($"lost child {child}: {reason}");
                // A child given up for holding the ring without reading is hung: the server fails it. Any other
                // lost link the child repairs itself (it asks the server for a new parent).
                if (hung) _ = channel.SendAsync(new ChildLost(child, reason), CancellationToken.None).ContinueWith(static _ => { }, TaskScheduler.Default);
            });
        lock (_gate)
        {
            _links = links;
            foreach (int c in _adoptedEarly) links.Expect(c);
        }
        var accepting = links.AcceptAsync(ct);
        var localCursor = _localCursor = ring.Attach("local sink");

        var parentAddress = plan.ParentAddress.Length == 0 ? server.Address : await Links.ResolveAsync(plan.ParentAddress, ct).ConfigureAwait(false);
        var clock = Stopwatch.StartNew();
        var receiving = Task.Run(() => UpstreamAsync(new IPEndPoint(parentAddress, plan.ParentPort), plan, streamCipher, server, ct), ct);
        // The marker says "not verified" from before the first byte until the copy is verified.
        string? marker = _options.IncompleteMarkerTarget is not { } target ? null
            : Directory.Exists(target) ? Path.Combine(target, ".ka-deploy-incomplete") : target.TrimEnd('/') + ".ka-deploy-incomplete";
        if (marker is not null)
        {
            try { await File.WriteAllTextAsync(marker, $"ka-deploy: copy in progress or failed; removed only once verified (node {NodeId}, server {server})\n", ct).ConfigureAwait(false); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { Log($"cannot write the marker {marker}: {e.Message}"); marker = null; }
        }
        var local = new LocalSink(localCursor, sink, plan.Compression, plan.Digest);
        var watching = StallWatch.RunAsync(ring, _options.StallTimeout, Log, ct);
        var reporting = ReportProgressAsync(channel, ring, local, ct);
        ProgressLine? progress = _options.ProgressOnTerminal is { } terminal
            ? new ProgressLine($"node {NodeId}", () => (local.PayloadBytes, plan.EstimatedLength > 0 ? plan.EstimatedLength : null, ""), _options.Log, terminal)
            : null;

        var (verified, message) = await local.RunAsync(ct).ConfigureAwait(false);
        if (progress is not null) await progress.DisposeAsync().ConfigureAwait(false);
        if (verified && marker is not null)
        {
            try
            {
                // Removing the marker must not change the extracted root directory's mtime (set from the archive).
                string dir = Path.GetDirectoryName(Path.GetFullPath(marker))!;
                var st = Platform.Posix.LStat(dir);
                File.Delete(marker);
                if (Path.GetFileName(marker) == ".ka-deploy-incomplete") Platform.Posix.SetTimes(dir, st.MtimeSec, st.MtimeNsec);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { verified = false; message = $"cannot remove the marker {marker}: {e.Message}"; }
        }
        var result = new ClientResult(verified, ring.NextOffset, local.PayloadBytes, clock.Elapsed, message, NodeId);
        Log(verified
            ? $"verified {result.PayloadBytes} bytes in {result.Elapsed.TotalSeconds:0.00} s ({result.PayloadBytes / 1e6 / Math.Max(result.Elapsed.TotalSeconds, 1e-9):0.0} MB/s)"
            : $"FAILED: {message}");
        try
        {
            await channel.SendAsync(new Done(verified, result.WireBytes, result.PayloadBytes, (long)result.Elapsed.TotalMilliseconds, message), ct).ConfigureAwait(false);
        }
        catch (Exception e) when (ConnectionErrors.IsLinkFailure(e))
        {
            Log($"could not report to the server: {ConnectionErrors.Describe(e)}");
        }

        // Stay until every child has the whole stream (leaving earlier would cut the tree below us), unless
        // the server lets us go (our children were re-attached elsewhere) or is gone.
        var stop = Task.WhenAny(_released.Task, _serverLost.Task);
        if (await Task.WhenAny(receiving, stop).ConfigureAwait(false) == receiving && receiving.IsCompletedSuccessfully)
            await Task.WhenAny(links.WhenSendersDoneAsync(), stop).ConfigureAwait(false);
        if (_options.WaitRelease && !_released.Task.IsCompleted && !_serverLost.Task.IsCompleted)
        {
            Log("waiting for the server's release");
            await stop.ConfigureAwait(false);
        }
        await runCts.CancelAsync().ConfigureAwait(false);
        lock (_gate) _upstream?.Abort("node done");
        try { await receiving.ConfigureAwait(false); } catch (Exception e) when (e is OperationCanceledException || e is KaDeployException || ConnectionErrors.IsLinkFailure(e)) { }
        await Task.WhenAll(accepting, reporting, watching, beating).ConfigureAwait(false);
        try { await controlReader.ConfigureAwait(false); } catch (OperationCanceledException) { }
        return result;
    }

    // The server chose the session's cipher; a node that cannot run it says so in one line, to its log and to the
    // server (which counts it failed and re-attaches its children), and stops.
    private async Task<StreamCipher> OpenStreamCipherAsync(Plan plan, ControlChannel channel, CancellationToken ct)
    {
        try
        {
            return StreamCipher.Create(plan.StreamKey!, plan.StreamId, plan.Cipher, _options.LibsodiumCandidates);
        }
        catch (CipherUnavailableException e)
        {
            Log($"refusing the session: {e.Message}");
            try { await channel.SendAsync(new Done(false, 0, 0, 0, $"refused: {e.Message}"), ct).ConfigureAwait(false); }
            catch (Exception f) when (ConnectionErrors.IsLinkFailure(f)) { Log($"could not report to the server: {ConnectionErrors.Describe(f)}"); }
            throw;
        }
    }

    private void Touch() => Volatile.Write(ref _lastHeard, Environment.TickCount64);

    // Why the upstream link last failed: a node that then loses the server too says both, so a corrupted
    // frame or a wrong End is still named in its verdict.
    private volatile string? _lastLinkFailure;

    private void ServerLost(IPEndPoint server, string reason)
    {
        string after = _lastLinkFailure is { } link ? $" (after its upstream link failed: {link})" : "";
        if (_serverLost.TrySetResult($"server {server} lost: {reason}{after}"))
        {
            Log($"server {server} lost: {reason}");
            lock (_gate) _upstream?.Abort($"server {server} lost");
        }
    }

    private async Task<Connection> ConnectWithRetryAsync(IPEndPoint server, CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        var lastLog = TimeSpan.FromSeconds(-10);
        while (true)
        {
            try
            {
                return await _transport.ConnectAsync(server, _options.Bind, ct).ConfigureAwait(false);
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.HostUnreachable
                or SocketError.NetworkUnreachable or SocketError.TimedOut or SocketError.HostDown)
            {
                if (deadline.Elapsed >= _options.ConnectTimeout)
                    throw new KaDeployException($"no server at {server} after {_options.ConnectTimeout.TotalSeconds:0} s ({e.Message})");
                if (deadline.Elapsed - lastLog >= TimeSpan.FromSeconds(10))
                {
                    Log($"waiting for the server at {server} ({e.Message})");
                    lastLog = deadline.Elapsed;
                }
                // Short retries at first: when the server comes up, every waiting node should be in within a
                // blink, since the session's clock starts then. A node that has waited long backs off to 4/s.
                var pause = deadline.Elapsed < TimeSpan.FromSeconds(30) ? TimeSpan.FromMilliseconds(50) : TimeSpan.FromMilliseconds(250);
                await Task.Delay(pause, ct).ConfigureAwait(false);
            }
        }
    }

    // One data link to a parent: connect (retrying while it is not up yet), hand-shake, DataHello at the offset.
    // A Reattach that comes meanwhile (say our parent refused the session right after its Plan, or died before we
    // reached it) names a parent newer than this one: the link's abort stops the attempts at once, not after the patience.
    private async Task<Connection> LinkAsync(UpstreamLink link, IPEndPoint parent, Plan plan, long offset, TimeSpan patience, CancellationToken ct)
    {
        try
        {
            return await LinkAttemptsAsync(parent, plan, offset, patience, Stopwatch.StartNew(), link.Attempts, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new LinkStoppedException(link.AbortReason ?? "the server named a new parent");
        }
    }

    /// <summary>The link was stopped while linking: the server named a new parent, or was lost.</summary>
    private sealed class LinkStoppedException(string reason) : KaDeployException(reason);

    private async Task<Connection> LinkAttemptsAsync(IPEndPoint parent, Plan plan, long offset, TimeSpan patience, Stopwatch deadline,
        CancellationToken linking, CancellationToken ct)
    {
        while (true)
        {
            if (_reattach.Reader.TryPeek(out _)) throw new LinkStoppedException("the server named a new parent");
            Connection? connection = null;
            try
            {
                using var attempt = CancellationTokenSource.CreateLinkedTokenSource(linking);
                attempt.CancelAfter(patience);
                connection = await _transport.ConnectAsync(parent, _options.Bind, attempt.Token).ConfigureAwait(false);
                connection = await _handshake.OpenAsync(connection, ChannelKind.Data, _options.Session, attempt.Token).ConfigureAwait(false);
                var channel = connection.OpenControlChannel();
                await channel.SendAsync(new DataHello(ProtocolConstants.Version, plan.LinkKey, plan.NodeId, offset), attempt.Token).ConfigureAwait(false);
                await channel.ExpectAsync<DataAccept>(attempt.Token).ConfigureAwait(false);
                Log($"linked to {parent}{(offset > 0 ? $" at offset {offset}" : "")}");
                return connection;
            }
            catch (OperationCanceledException) when (!linking.IsCancellationRequested)
            {
                connection?.Abort("no answer");
                throw new LinkLostException($"parent {parent} did not answer within {patience.TotalSeconds:0.#} s");
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                connection?.Abort("re-attaching on the server's word");
                throw;
            }
            catch (SocketException e) when (deadline.Elapsed < patience && e.SocketErrorCode == SocketError.ConnectionRefused)
            {
                connection?.Abort("refused");
                await Task.Delay(TimeSpan.FromMilliseconds(50), linking).ConfigureAwait(false);
            }
            catch (Exception e) when (e is KaDeployException || ConnectionErrors.IsLinkFailure(e))
            {
                connection?.Abort(ConnectionErrors.Describe(e));
                throw new LinkLostException($"cannot link to parent {parent}: {ConnectionErrors.Describe(e)}");
            }
        }
    }

    // Upstream into the ring, across repairs: returns at the End frame; throws when no parent is left.
    private async Task UpstreamAsync(IPEndPoint firstParent, Plan plan, StreamCipher? cipher, IPEndPoint server, CancellationToken ct)
    {
        var ring = _ring!;
        var parent = firstParent;
        int parentId = plan.ParentId;
        bool first = true;
        try
        {
            while (true)
            {
                long offset = ring.NextOffset;
                var link = new UpstreamLink(ct);
                lock (_gate) _upstream = link;
                try
                {
                    Connection connection;
                    try
                    {
                        connection = await LinkAsync(link, parent, plan, offset, first ? _options.LinkTimeout : _options.FailureTimeout, ct).ConfigureAwait(false);
                    }
                    catch (LinkStoppedException e)
                    {
                        // Not a failed resume: the server already knows where we go (no ResumeFailed, which would send us to it).
                        if (_serverLost.Task.IsCompleted) throw new LinkLostException(_serverLost.Task.Result);
                        Log($"stopped linking to {(parentId == 0 ? "the server" : $"node {parentId}")}: {e.Message}");
                        (parent, parentId) = await NextParentAsync(server, "re-attach", ct).ConfigureAwait(false);
                        continue;
                    }
                    catch (LinkLostException e)
                    {
                        // A first link that fails is repaired like a lost one: the parent may have been declared failed while
                        // we were still linking (its Reattach is then on its way), or only this link is broken (the server
                        // serves us itself). NextParentAsync gives up with the reason when the server has no answer.
                        Log($"cannot {(first ? "link" : "resume")} at offset {offset} from {(parentId == 0 ? "the server" : $"node {parentId}")}: {e.Message}");
                        await _channel!.SendAsync(new ResumeFailed(parentId, offset, e.Message), ct).ConfigureAwait(false);
                        (parent, parentId) = await NextParentAsync(server, $"{(first ? "first link" : "resume")} at offset {offset} failed ({e.Message})", ct).ConfigureAwait(false);
                        continue;
                    }
                    // A Reattach that came after the link was made but before it was recorded names a newer parent: go there.
                    // Recorded and checked under the lock the control loop aborts the link and queues a Reattach under: either
                    // the abort came first (Linked closes the connection with its reason) or the Reattach is already queued.
                    lock (_gate)
                    {
                        if (link.Linked(connection) && _reattach.Reader.TryPeek(out _)) link.Abort("re-attaching on the server's word");
                    }
                    if (!first) await _channel!.SendAsync(new Heartbeat(offset, FlowState.Flowing), ct).ConfigureAwait(false);
                    await _channel!.SendAsync(new LinkUp(), ct).ConfigureAwait(false);
                    first = false;
                    var receiver = new FrameReceiver(connection.Stream, ring, offset, cipher, faultRingOnError: false)
                    {
                        Peer = parentId == 0 ? $"the server ({parent})" : $"parent node {parentId} ({parent})",
                    };
                    try
                    {
                        await receiver.RunAsync(ct).ConfigureAwait(false);
                        _complete = true;
                        lock (_gate) link.Abort("stream complete");
                        return;
                    }
                    catch (Exception e) when (e is KaDeployException || ConnectionErrors.IsLinkFailure(e))
                    {
                        string why = link.AbortReason ?? connection.AbortReason ?? ConnectionErrors.Describe(e);
                        _lastLinkFailure = why;
                        lock (_gate) link.Abort(why);
                        if (_serverLost.Task.IsCompleted) throw new LinkLostException(_serverLost.Task.Result);
                        Log($"upstream link to {(parentId == 0 ? "the server" : $"node {parentId}")} lost at offset {ring.NextOffset}: {why}");
                        (parent, parentId) = await NextParentAsync(server, $"link lost ({why})", ct, parentId, ring.NextOffset).ConfigureAwait(false);
                    }
                }
                finally
                {
                    // Out of the field first, under the lock every abort takes: no abort can find it once disposed.
                    lock (_gate) if (_upstream == link) _upstream = null;
                    link.Dispose();
                }
            }
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            // No parent left: the sink and the children end with the reason.
            ring.Fault(e is KaDeployException ? e : new KaDeployException(ConnectionErrors.Describe(e), e));
            throw;
        }
    }

    // Waits for the server's Reattach. If none comes within the failure timeout (the server saw nothing wrong with
    // our parent: only our link broke), ask for one (ResumeFailed); if still none, give up.
    private async Task<(IPEndPoint Parent, int ParentId)> NextParentAsync(IPEndPoint server, string why, CancellationToken ct,
        int lostParent = -1, long offset = 0)
    {
        var patience = _options.FailureTimeout + TimeSpan.FromSeconds(1);
        for (int round = 0; round < 3; round++)
        {
            using var wait = CancellationTokenSource.CreateLinkedTokenSource(ct);
            wait.CancelAfter(patience);
            try
            {
                var r = await _reattach.Reader.ReadAsync(wait.Token).ConfigureAwait(false);
                while (_reattach.Reader.TryRead(out var later)) r = later; // only the latest counts
                var address = r.ParentAddress.Length == 0 ? server.Address : await Links.ResolveAsync(r.ParentAddress, ct).ConfigureAwait(false);
                Log($"re-attaching to {(r.ParentId == 0 ? "the server" : $"node {r.ParentId}")} ({address}:{r.ParentPort})");
                return (new IPEndPoint(address, r.ParentPort), r.ParentId);
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                if (_serverLost.Task.IsCompleted) throw new LinkLostException(_serverLost.Task.Result);
                if (lostParent >= 0 && round == 0)
                    await _channel!.SendAsync(new ResumeFailed(lostParent, offset, why), ct).ConfigureAwait(false);
            }
        }
        throw new LinkLostException($"{why}; no new parent from the server within {3 * patience.TotalSeconds:0} s");
    }

    private async Task ReadControlAsync(ControlChannel channel, IPEndPoint server, CancellationTokenSource run, CancellationToken ct)
    {
        try
        {
            while (true)
            {
                var m = await channel.ReceiveAsync(ct).ConfigureAwait(false);
                Touch();
                switch (m)
                {
                    case Plan p: _plan.TrySetResult(p); break;
                    case Heartbeat or Ping: break;
                    case Release: _released.TrySetResult(); break;
                    case Adopt a:
                        lock (_gate)
                        {
                            if (_links is null) _adoptedEarly.Add(a.ChildId);
                            else _links.Expect(a.ChildId);
                        }
                        Log($"adopting node {a.ChildId}");
                        break;
                    case DropChild d:
                        Log($"dropping child {d.ChildId}: {d.Reason}");
                        _links?.Drop(d.ChildId, d.Reason);
                        break;
                    case Reattach r:
                        if (_complete) { Log($"re-attach to node {r.ParentId} ignored: the whole stream is here"); break; }
                        // The link is stopped (its attempts cancelled, or its connection closed) and the Reattach queued under
                        // one lock, the one under which the upstream loop records a connection and looks for a queued Reattach.
                        // A newer link, made for this very Reattach, is a new object and is not touched.
                        lock (_gate)
                        {
                            _upstream?.Abort($"re-attaching to {(r.ParentId == 0 ? "the server" : $"node {r.ParentId}")} on the server's word");
                            _reattach.Writer.TryWrite(r);
                        }
                        break;
                    case Moved mv:
                        Log($"moved by the server: {mv.Reason}");
                        break;
                    case Abort a:
                        Log($"server aborted: {a.Reason}");
                        _abortReason = a.Reason;
                        var aborted = new KaDeployException($"server aborted: {a.Reason}");
                        _plan.TrySetException(aborted);
                        // The ring first, with the reason, then the token: a sink waiting for a frame is woken by the fault
                        // and fails with the server's word. Cancelled first, its wait could end in a bare cancellation
                        // before the token's own fault callback ran, and the node would leave without its FAILED line.
                        _ring?.Fault(aborted);
                        await run.CancelAsync().ConfigureAwait(false);
                        return;
                    case null:
                        ServerLost(server, "it closed the control connection");
                        return;
                    default: Log($"ignoring unexpected {m.Type} from the server"); break;
                }
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
        catch (Exception e) when (ConnectionErrors.IsLinkFailure(e))
        {
            if (!ct.IsCancellationRequested) ServerLost(server, "control link " + ConnectionErrors.Describe(e));
        }
    }

    private FlowState CurrentFlow()
    {
        var ring = _ring;
        if (ring is null) return FlowState.Flowing;
        if (_complete || ring.IsComplete) return FlowState.Complete;
        lock (_gate) if (_upstream?.Connection is null) return FlowState.Orphaned;
        var holder = ring.Holder();
        return holder is null ? FlowState.Flowing : holder == _localCursor ? FlowState.HeldBySink : FlowState.HeldByChild;
    }

    // Every 0.5 s: our offset and state to the server; and the server's silence, checked.
    private async Task HeartbeatAsync(ControlChannel channel, IPEndPoint server, CancellationToken ct)
    {
        using var timer = new PeriodicTimer(HeartbeatInterval);
        try
        {
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
            {
                long silent = Environment.TickCount64 - Volatile.Read(ref _lastHeard);
                // Before the plan the server may be busy (a tree walk, a slow start): nothing is lost by waiting longer.
                double limit = _plan.Task.IsCompleted ? _options.FailureTimeout.TotalMilliseconds : Math.Max(_options.FailureTimeout.TotalMilliseconds, 30_000);
                if (silent >= limit)
                {
                    ServerLost(server, $"no heartbeat for {silent / 1000.0:0.0} s");
                    return;
                }
                if (_serverLost.Task.IsCompleted) return;
                // Read before the offset: both only grow, so what is said held is never past the offset said.
                long retained = _ring?.RetainedFromOffset ?? 0;
                await channel.SendAsync(new Heartbeat(_ring?.NextOffset ?? 0, CurrentFlow(), retained), ct).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is OperationCanceledException || ConnectionErrors.IsLinkFailure(e)) { }
    }

    private static async Task ReportProgressAsync(ControlChannel channel, RelayRing ring, LocalSink local, CancellationToken ct)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
        try
        {
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
                await channel.SendAsync(new Progress(ring.NextOffset, local.PayloadBytes), ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException || ConnectionErrors.IsLinkFailure(e)) { }
    }
}
