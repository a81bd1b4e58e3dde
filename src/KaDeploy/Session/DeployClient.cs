using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using KaDeploy.Payloads;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Reporting;
using ZstdSharp;

namespace KaDeploy.Session;

/// <summary>
/// One node: registers with the server, links to its parent, and runs three loops over one ring:
/// upstream → ring (<see cref="FrameReceiver"/>), ring → each child (<see cref="ChildSender"/>),
/// ring → local sink. A failing sink does not stop the relay: the children still get everything.
/// </summary>
public sealed class DeployClient
{
    private readonly ClientOptions _options;

    public DeployClient(ClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options;
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
        var server = await FindServerAsync(options, msg => options.Log.WriteLine("ka-deploy go: " + msg), ct).ConfigureAwait(false);
        using var socket = await Links.ConnectAsync(server, options.Bind, options.DeadPeerTimeout, ct).ConfigureAwait(false);
        await using var channel = new ControlChannel(new NetworkStream(socket, ownsSocket: false));
        await channel.SendAsync(new Hello(ProtocolConstants.Version, HelloRole.Go, options.Session, options.NodeName, "", 1), ct).ConfigureAwait(false);
        var w = await Links.WithTimeout(t => channel.ExpectAsync<Welcome>(t), TimeSpan.FromSeconds(10), "the server's answer", ct).ConfigureAwait(false);
        return $"server {server} starts with {w.Registered} of {w.Expected} client(s)";
    }

    private static async Task<IPEndPoint> FindServerAsync(ClientOptions options, Action<string> log, CancellationToken ct)
    {
        if (options.Server is null)
            return await Discovery.FindServerAsync(options.Session, options.DiscoveryAddress, options.DiscoveryPort, options.Bind, options.ConnectTimeout, log, ct).ConfigureAwait(false);
        var (host, port) = Links.ParseHostPort(options.Server, ProtocolConstants.DefaultControlPort);
        return new IPEndPoint(await Links.ResolveAsync(host, ct).ConfigureAwait(false), port);
    }

    private volatile string? _abortReason;

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
    }

    private async Task<ClientResult> RunCoreAsync(CancellationToken cancellationToken)
    {
        using var runCts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var ct = runCts.Token;
        var server = await FindServerAsync(_options, Log, ct).ConfigureAwait(false);
        using var listener = Links.Listen(_options.Bind ?? IPAddress.Any, _options.DataPort, "data");
        int dataPort = ((IPEndPoint)listener.LocalEndPoint!).Port;

        using var control = await ConnectWithRetryAsync(server, ct).ConfigureAwait(false);
        await using var channel = new ControlChannel(new NetworkStream(control, ownsSocket: false));
        await channel.SendAsync(new Hello(ProtocolConstants.Version, HelloRole.Client, _options.Session, _options.NodeName,
            _options.Bind?.ToString() ?? "", dataPort), ct).ConfigureAwait(false);
        var welcome = await Links.WithTimeout(t => channel.ExpectAsync<Welcome>(t), TimeSpan.FromSeconds(30), "the server's welcome", ct).ConfigureAwait(false);
        NodeId = welcome.NodeId;
        Log($"registered with {server} as node {NodeId} ({welcome.Registered}/{welcome.Expected}); data port {dataPort}");

        Plan plan = await WaitForPlanAsync(channel, ct).ConfigureAwait(false);
        var sink = _options.SinkFactory(plan);
        Log($"parent {(plan.ParentId == 0 ? "server" : $"node {plan.ParentId}")}, {plan.ChildIds.Length} child(ren); {plan.Kind} payload, sink: {sink.Description}");

        using var ring = new RelayRing(_options.BufferBytes);
        // A sink blocked in a synchronous read waits on the ring, not on the token: wake it with a fault.
        using var faultOnCancel = ct.Register(() => ring.Fault(new KaDeployException("cancelled")));
        var links = new ChildLinks(listener, ring, plan.LinkKey, plan.ChildIds, _options.DeadPeerTimeout, Log,
            (child, reason) =>
            {
                Log($"lost child {child}: {reason}");
                _ = channel.SendAsync(new ChildLost(child, reason), CancellationToken.None).ContinueWith(static _ => { }, TaskScheduler.Default);
            });
        var accepting = links.AcceptAsync(ct);
        var localCursor = ring.Attach("local sink");

        var parentAddress = plan.ParentAddress.Length == 0 ? server.Address : await Links.ResolveAsync(plan.ParentAddress, ct).ConfigureAwait(false);
        await using var upstream = await LinkUpstreamAsync(new IPEndPoint(parentAddress, plan.ParentPort), plan, ct).ConfigureAwait(false);
        var clock = Stopwatch.StartNew();
        await channel.SendAsync(new LinkUp(), ct).ConfigureAwait(false);

        var released = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var controlReader = ReadControlAsync(channel, released, runCts, ct);
        var receiver = new FrameReceiver(upstream, ring)
        {
            Peer = plan.ParentId == 0 ? $"the server ({parentAddress}:{plan.ParentPort})" : $"parent node {plan.ParentId} ({parentAddress}:{plan.ParentPort})",
        };
        var receiving = Task.Run(() => receiver.RunAsync(ct), ct);
        var local = new LocalSink(localCursor, sink, plan.Compression, plan.Digest);
        var watching = StallWatch.RunAsync(ring, _options.StallTimeout, Log, ct);
        var reporting = ReportProgressAsync(channel, receiver, local, ct);
        ProgressLine? progress = _options.ProgressOnTerminal is { } terminal
            ? new ProgressLine($"node {NodeId}", () => (local.PayloadBytes, plan.EstimatedLength > 0 ? plan.EstimatedLength : null, ""), _options.Log, terminal)
            : null;

        var (verified, message) = await local.RunAsync(ct).ConfigureAwait(false);
        if (progress is not null) await progress.DisposeAsync().ConfigureAwait(false);
        var result = new ClientResult(verified, receiver.WireBytes, local.PayloadBytes, clock.Elapsed, message, NodeId);
        Log(verified
            ? $"verified {result.PayloadBytes} bytes in {result.Elapsed.TotalSeconds:0.00} s ({result.PayloadBytes / 1e6 / Math.Max(result.Elapsed.TotalSeconds, 1e-9):0.0} MB/s)"
            : $"FAILED: {message}");
        try
        {
            await channel.SendAsync(new Done(verified, result.WireBytes, result.PayloadBytes, (long)result.Elapsed.TotalMilliseconds, message), ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            Log($"could not report to the server: {e.Message}");
        }

        // Stay until every child has the whole stream: leaving earlier would cut the chain below us.
        try { await receiving.ConfigureAwait(false); } catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested) { }
        await upstream.DisposeAsync().ConfigureAwait(false);
        await links.WhenSendersDoneAsync().ConfigureAwait(false);
        if (_options.WaitRelease)
        {
            Log("waiting for the server's release");
            await Task.WhenAny(released.Task, controlReader).ConfigureAwait(false);
        }
        await runCts.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(accepting, reporting, watching).ConfigureAwait(false);
        try { await controlReader.ConfigureAwait(false); } catch (OperationCanceledException) { }
        return result;
    }

    private async Task<Socket> ConnectWithRetryAsync(IPEndPoint server, CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        var lastLog = TimeSpan.FromSeconds(-10);
        while (true)
        {
            try
            {
                return await Links.ConnectAsync(server, _options.Bind, _options.DeadPeerTimeout, ct).ConfigureAwait(false);
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

    private static async Task<Plan> WaitForPlanAsync(ControlChannel channel, CancellationToken ct)
    {
        while (true)
        {
            var m = await channel.ReceiveAsync(ct).ConfigureAwait(false);
            switch (m)
            {
                case Plan p: return p;
                case Ping: continue;
                case Abort a: throw new KaDeployException($"server aborted: {a.Reason}");
                case null: throw new KaDeployException("server closed the control link before the start");
                default: throw new ProtocolException($"unexpected {m.Type} while waiting for the plan");
            }
        }
    }

    private async Task<Stream> LinkUpstreamAsync(IPEndPoint parent, Plan plan, CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            Socket? socket = null;
            try
            {
                socket = await Links.ConnectAsync(parent, _options.Bind, _options.DeadPeerTimeout, ct).ConfigureAwait(false);
                var stream = new NetworkStream(socket, ownsSocket: true);
                var channel = new ControlChannel(stream);
                await channel.SendAsync(new DataHello(ProtocolConstants.Version, plan.LinkKey, plan.NodeId, 0), ct).ConfigureAwait(false);
                await Links.WithTimeout(t => channel.ExpectAsync<DataAccept>(t), TimeSpan.FromSeconds(10), "the parent's accept", ct).ConfigureAwait(false);
                Log($"linked to {parent}");
                return stream;
            }
            catch (SocketException e) when (deadline.Elapsed < _options.LinkTimeout)
            {
                socket?.Dispose();
                Log($"parent {parent} not reachable yet ({e.Message}); retrying");
                await Task.Delay(TimeSpan.FromMilliseconds(50), ct).ConfigureAwait(false);
            }
            catch (SocketException e)
            {
                socket?.Dispose();
                throw new KaDeployException($"cannot link to parent {parent}: {e.Message}");
            }
        }
    }

    private async Task ReadControlAsync(ControlChannel channel, TaskCompletionSource released, CancellationTokenSource run, CancellationToken ct)
    {
        try
        {
            while (true)
            {
                var m = await channel.ReceiveAsync(ct).ConfigureAwait(false);
                switch (m)
                {
                    case Release: released.TrySetResult(); break;
                    case Ping: break;
                    case Abort a:
                        Log($"server aborted: {a.Reason}");
                        _abortReason = a.Reason;
                        await run.CancelAsync().ConfigureAwait(false);
                        return;
                    case null: return;
                    default: Log($"ignoring unexpected {m.Type} from the server"); break;
                }
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or ProtocolException) { }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
    }

    private static async Task ReportProgressAsync(ControlChannel channel, FrameReceiver receiver, LocalSink local, CancellationToken ct)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
        try
        {
            while (await timer.WaitForNextTickAsync(ct).ConfigureAwait(false))
                await channel.SendAsync(new Progress(receiver.WireBytes, local.PayloadBytes), ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or ObjectDisposedException) { }
    }
}

/// <summary>Ring → (zstd) → digest → sink, then the verdict against the End frame.</summary>
internal sealed class LocalSink(RingCursor cursor, IPayloadSink sink, WireCompression compression, DigestAlgorithm algorithm)
{
    private DigestReadStream? _digest;

    public long PayloadBytes => _digest?.BytesRead ?? 0;

    public async Task<(bool Verified, string Message)> RunAsync(CancellationToken ct)
    {
        var reader = new RingReaderStream(cursor);
        Stream? decompressor = null;
        bool abandoned = false;
        try
        {
            decompressor = compression == WireCompression.Zstd ? new DecompressionStream(reader, 1 << 20, leaveOpen: true) : null;
            _digest = new DigestReadStream(decompressor ?? reader, algorithm);
            var consuming = Task.Run(() => sink.ConsumeAsync(_digest, ct), ct);
            if (await Task.WhenAny(consuming, cursor.Evicted).ConfigureAwait(false) != consuming)
            {
                // The disk (or command) stopped taking data. Leave the stuck call behind, keep relaying.
                abandoned = true;
                return (false, "local sink stalled: " + await cursor.Evicted.ConfigureAwait(false));
            }
            await consuming.ConfigureAwait(false);
            await _digest.DrainAsync(ct).ConfigureAwait(false);
            // A decompressor stops at the end of its last frame; whatever follows on the wire must be nothing.
            var rest = new byte[4096];
            if (await reader.ReadAsync(rest, ct).ConfigureAwait(false) > 0)
                return (false, "unexpected data after the end of the compressed payload");
            var end = reader.End ?? throw new KaDeployException("stream ended without an End frame");
            byte[] sum = _digest.Digest();
            if (end.Algorithm != algorithm)
                return (false, $"the End frame carries a {end.Algorithm.Name()} digest, the plan named {algorithm.Name()}");
            if (_digest.BytesRead != end.PayloadLength)
                return (false, $"payload length {_digest.BytesRead} differs from the server's {end.PayloadLength}");
            if (!sum.AsSpan().SequenceEqual(end.Digest))
                return (false, $"{algorithm.Name()} mismatch: got {DeployServer.Hex(algorithm, sum)}, server sent {DeployServer.Hex(algorithm, end.Digest)}");
            return (true, "");
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            return (false, OneLine(e));
        }
        finally
        {
            // Detach from the ring so that a failed sink never holds back the children. An abandoned sink
            // may still be inside these streams: the ring has already let go of it, leave them alone.
            if (!abandoned)
            {
                decompressor?.Dispose();
                _digest?.Dispose();
                reader.Dispose();
            }
        }
    }

    private static string OneLine(Exception e)
    {
        string m = e is KaDeployException ? e.Message : $"{e.GetType().Name}: {e.Message}";
        return m.ReplaceLineEndings(" ");
    }
}
