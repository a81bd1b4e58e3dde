using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Reporting;
using KaDeploy.Topology;
using KaDeploy.Transport;

namespace KaDeploy.Session;

/// <summary>
/// The root of the tree: registers clients, plans the tree, streams the payload into it and
/// collects every node's verdict. All I/O is asynchronous: a session of hundreds of nodes holds one
/// control connection per node and a data link per direct child, and no thread per node.
/// </summary>
public sealed partial class DeployServer : IAsyncDisposable
{
    private readonly ServerOptions _options;
    private readonly ITransport _transport;
    private readonly IConnectionHandshake _handshake;
    private readonly IConnectionListener _controlListener;
    private readonly IConnectionListener _dataListener;
    private readonly Socket? _discovery;
    private readonly object _gate = new();
    private readonly NodeTable _nodes = new();
    private readonly TaskCompletionSource<string> _start = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _lifetime = new();
    private readonly List<Task> _background = [];
    private readonly Stopwatch _clock = new(); // session time, from RunAsync: the report, the live view and repair records
    private int _nextId = 1;
    private volatile Relay.DigestWriteStream? _producedDigest; // the payload's digest stream, read by the progress line
    private bool _started;
    private readonly Security.StreamCipherKind _cipher; // the keyed session's AEAD, chosen before any port is bound
    private readonly string _cipherNote;

    /// <summary>Binds the control, data and discovery ports at once, so that a port clash fails before anyone waits.</summary>
    public DeployServer(ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Clients < 1) throw new KaDeployException("--clients must be at least 1");
        if (options.Arity is < 1 or > 64) throw new KaDeployException("--arity must be between 1 and 64");
        if (options.FailureTimeout <= TimeSpan.FromSeconds(0.5)) throw new KaDeployException("--failure-timeout must be more than the 0.5 s heartbeat interval");
        _options = options;
        (_cipher, _cipherNote) = ChooseCipher(options);
        Heartbeats.ReserveThreads();
        _transport = options.Transport ?? new TcpTransport(options.DeadPeerTimeout);
        // Always the v2 handshake, keyed or not: a keyed peer and an unkeyed one refuse each other in one line.
        _handshake = options.Handshake ?? new Security.KeyedHandshake(options.Key);
        _controlListener = _transport.Listen(options.Bind, options.ControlPort, "control");
        try
        {
            _dataListener = _transport.Listen(options.Bind, options.DataPort, "data");
        }
        catch
        {
            _controlListener.Dispose();
            throw;
        }
        if (options.Discovery && options.Transport is null && options.Bind.AddressFamily == AddressFamily.InterNetwork)
            _discovery = Discovery.BindResponder(options.Bind, options.DiscoveryPort, Log);
    }

    // --cipher: an explicit AEGIS-256 the server cannot run is an error now, not a surprise at the first frame;
    // auto falls back to AES-256-GCM and says why.
    private static (Security.StreamCipherKind, string) ChooseCipher(ServerOptions options)
    {
        if (options.Key is null) return (Security.StreamCipherKind.Aes256Gcm, "");
        var wanted = options.Cipher ?? Security.StreamCipherKind.Aegis256;
        if (Security.StreamCipher.IsAvailable(wanted, out string why))
            return (wanted, $"frames sealed with {Security.StreamCipher.NameOf(wanted)}"
                + (wanted != Security.StreamCipherKind.Aes256Gcm && Security.Libsodium.Load(out _) is { } l ? $" (libsodium {l.Version}, {l.Path})" : ""));
        if (options.Cipher is not null) throw new Security.CipherUnavailableException(wanted, why);
        return (Security.StreamCipherKind.Aes256Gcm, $"frames sealed with AES-256-GCM (AEGIS-256 unavailable: {why})");
    }

    /// <summary>The AEAD this server seals a keyed session's frames with (<see cref="ServerOptions.Cipher"/> resolved).</summary>
    public Security.StreamCipherKind Cipher => _cipher;

    /// <summary>The control port actually bound (useful when 0 was asked for).</summary>
    public int ControlPort => _controlListener.LocalEndPoint.Port;

    /// <summary>The data port the server's direct children connect to.</summary>
    public int DataPort => _dataListener.LocalEndPoint.Port;

    private void Log(string line)
    {
        lock (_options.Log) _options.Log.WriteLine($"ka-deploy server: {line}");
    }

    /// <summary>Runs the whole session. The report says which nodes verified their copy.</summary>
    public async Task<SessionReport> RunAsync(CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _lifetime.Token);
        var ct = linked.Token;
        var report = new SessionReport
        {
            Session = _options.Session,
            Source = _options.Source.Description,
            Compression = _options.Compression == WireCompression.Zstd ? $"zstd:{_options.CompressionLevel}" : "none",
            Arity = _options.Arity,
            Started = DateTimeOffset.UtcNow,
        };
        _clock.Start();
        _background.Add(AcceptControlAsync(ct));
        _background.Add(WatchNodesAsync(_lifetime.Token)); // until disposed: heartbeats go on while the caller reports
        // A tree's size is estimated (a metadata walk) while the nodes boot and register.
        Task<long>? estimate = _options.Source.EstimatedLength is null && _options.Source is Payloads.IPayloadEstimate estimator
            ? estimator.EstimateLengthAsync(ct) : null;
        _ = estimate?.ContinueWith(t => Log($"size estimate unavailable: {t.Exception?.InnerException?.Message}"),
            CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        _ = estimate?.ContinueWith(t => Log($"size estimate: {t.Result} bytes"),
            CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
        if (_discovery is not null) _background.Add(Discovery.RespondAsync(_discovery, _options.Session, ControlPort, _options.Bind, _options.Key, Log, ct));
        if (_cipherNote.Length > 0) Log(_cipherNote);
        Log($"session '{_options.Session}': waiting for {_options.Clients} client(s) on port {ControlPort}, sending {_options.Source.Description}");

        string why = await WaitForStartAsync(ct).ConfigureAwait(false);
        ServerNode[] nodes;
        lock (_gate)
        {
            _started = true;
            nodes = _nodes.ToArray();
        }
        Log($"starting with {nodes.Length} client(s): {why}");
        _phase = "linking";
        using var recording = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var recorder = RecordProgressAsync(report, nodes, recording.Token);
        try
        {
            await RunSessionAsync(nodes, report, estimate, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is KaDeployException || ConnectionErrors.IsLinkFailure(e))
        {
            report.Message = e.Message;
            Log("session failed: " + e.Message);
            foreach (var n in nodes) n.Fail("session failed: " + e.Message);
            await Task.WhenAll(nodes.Select(n => n.TrySendAsync(new Abort(e.Message), ct))).ConfigureAwait(false);
        }
        report.Seconds = _clock.Elapsed.TotalSeconds;
        _phase = "done";
        await recording.CancelAsync().ConfigureAwait(false);
        await recorder.ConfigureAwait(false);
        report.Nodes = nodes.Select(n => n.Report).ToList();
        report.ListOutcomes();
        report.Success = report.Message.Length == 0 && nodes.Length > 0 && nodes.All(n => n.Report.Verified);
        if (!report.Success && report.Message.Length == 0)
            report.Message = $"{nodes.Count(n => !n.Report.Verified)} of {nodes.Length} node(s) failed";
        return report;
    }

    private async Task<string> WaitForStartAsync(CancellationToken ct)
    {
        if (_options.StartTimeout is not { } timeout) return await _start.Task.WaitAsync(ct).ConfigureAwait(false);
        var first = await Task.WhenAny(_start.Task, Task.Delay(timeout, ct)).ConfigureAwait(false);
        if (first == _start.Task) return await _start.Task.ConfigureAwait(false);
        ct.ThrowIfCancellationRequested();
        int count;
        lock (_gate) count = _nodes.Count;
        if (count >= Math.Max(1, _options.MinClients))
            return $"start timeout ({timeout.TotalSeconds:0} s) with {count} of {_options.Clients} registered";
        Log($"start timeout: only {count} of at least {_options.MinClients} client(s) registered; waiting on");
        return await _start.Task.WaitAsync(ct).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        await _lifetime.CancelAsync().ConfigureAwait(false);
        _controlListener.Dispose();
        _dataListener.Dispose();
        _discovery?.Dispose();
        ServerNode[] nodes;
        lock (_gate) nodes = _nodes.ToArray();
        foreach (var n in nodes) await n.DisposeAsync().ConfigureAwait(false);
        try { await Task.WhenAll(_background).ConfigureAwait(false); }
        catch (Exception e) when (e is OperationCanceledException || ConnectionErrors.IsLinkFailure(e)) { }
        _lifetime.Dispose();
    }
}
