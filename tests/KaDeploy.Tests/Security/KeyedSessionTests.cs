using System.Net;
using KaDeploy.Payloads;
using KaDeploy.Protocol;
using KaDeploy.Reporting;
using KaDeploy.Security;
using KaDeploy.Session;
using KaDeploy.Tests.Session;
using KaDeploy.Tests.TestSupport;
using KaDeploy.Transport;

namespace KaDeploy.Tests.Security;

/// <summary>
/// Whole sessions with a pre-shared key (issue 9, phase 2): the keyed handshake on every connection, the
/// stream key in the sealed Plan, sealed frames opened on every node. Keyed and unkeyed peers, and peers of
/// another key, refuse each other in one line and a refused node gets nothing; a flipped byte in one data
/// frame is caught by the node that receives it before it writes or forwards anything; repair still works.
/// </summary>
public class KeyedSessionTests
{
    private const long Length = 6_000_000;
    private const int Seed = 9;
    private static readonly Lazy<byte[]> Expected = new(() => GeneratedSource.Expected(Length, Seed, false));

    /// <summary>
    /// A sink that compares every byte with the source as it arrives and records the first that differs: a
    /// node that publishes an unopened or altered frame is caught at the first wrong byte, not only by the
    /// final digest. It can also run an action once, after <see cref="TripAt"/> bytes.
    /// </summary>
    private sealed class CheckingSink : IPayloadSink
    {
        private int _tripped;
        public long Written;
        public long FirstWrongByte = -1;
        public long TripAt { get; init; } = long.MaxValue;
        public Action? Trip { get; init; }
        /// <summary>Read as the file and command sinks do: frames lent from the ring (ISegmentReader), not copied out.</summary>
        public bool Segments { get; init; }
        public string Description => "memory (checked byte by byte)";

        public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
        {
            var buffer = new byte[65536];
            while (true)
            {
                ReadOnlyMemory<byte> got;
                if (Segments && input is KaDeploy.IO.ISegmentReader lender) got = await lender.ReadSegmentAsync(cancellationToken);
                else got = buffer.AsMemory(0, await input.ReadAsync(buffer, cancellationToken));
                if (got.IsEmpty) return;
                Check(got.Span);
            }
        }

        private void Check(ReadOnlySpan<byte> data)
        {
            var expected = Expected.Value;
            for (int i = 0; i < data.Length && FirstWrongByte < 0; i++)
                if (Written + i >= expected.Length || data[i] != expected[Written + i]) FirstWrongByte = Written + i;
            Written += data.Length;
            if (Written >= TripAt && Interlocked.Exchange(ref _tripped, 1) == 0) Trip?.Invoke();
        }
    }

    private sealed class Cluster : IAsyncDisposable
    {
        private readonly CancellationTokenSource _timeout = new(TimeSpan.FromMinutes(2));
        private Task<SessionReport>? _run;
        private Task<ClientResult>[] _clients = [];

        public MemoryTransport? Net { get; }
        public TamperingTransport? Tamper { get; }
        public StringWriter Log { get; } = new LockedStringWriter();
        public TextWriter SyncLog { get; }
        public IPAddress[] Addresses { get; }
        public CancellationTokenSource[] Kill { get; }
        public CheckingSink[] Sinks { get; }
        public DeployServer Server { get; }
        public PresharedKey?[] ClientKeys { get; }
        public Func<int, IReadOnlyList<string>?> LibsodiumFor { get; }

        public Cluster(int clients, PresharedKey? serverKey, Func<int, PresharedKey?> clientKey, bool tcp = false, int arity = 1,
            Func<int, Cluster, CheckingSink>? sinkFor = null, IPAddress? tamperAt = null, StreamCipherKind? cipher = null,
            Func<int, IReadOnlyList<string>?>? libsodiumFor = null)
        {
            LibsodiumFor = libsodiumFor ?? (_ => null);
            SyncLog = TextWriter.Synchronized(Log);
            Net = tcp ? null : new MemoryTransport { WindowBytes = 128 * 1024 };
            Tamper = tamperAt is null ? null : new TamperingTransport(Net!, tamperAt);
            Addresses = [.. Enumerable.Range(0, clients).Select(i => tcp ? LoopbackSession.NextAddress() : IPAddress.Parse($"127.0.9.{i + 10}"))];
            Kill = [.. Enumerable.Range(0, clients).Select(_ => CancellationTokenSource.CreateLinkedTokenSource(_timeout.Token))];
            // Odd nodes read as the file and command sinks do (segments lent from the ring), even nodes copy.
            Sinks = [.. Enumerable.Range(0, clients).Select(i => sinkFor?.Invoke(i, this) ?? new CheckingSink { Segments = i % 2 == 1 })];
            ClientKeys = [.. Enumerable.Range(0, clients).Select(clientKey)];
            Server = new DeployServer(new ServerOptions
            {
                Source = new GeneratedSource(Length, Seed), Clients = clients, Arity = arity, BufferBytes = 1L << 20,
                Bind = IPAddress.Loopback, ControlPort = 0, Discovery = false, Session = "keyed", Log = SyncLog,
                Transport = (ITransport?)Tamper ?? Net, FailureTimeout = TimeSpan.FromSeconds(3), SlowNodeAfter = TimeSpan.Zero, Key = serverKey,
                LinkTimeout = TimeSpan.FromSeconds(20), Cipher = cipher,
            });
        }

        public ClientOptions OptionsFor(int i) => new()
        {
            Server = $"127.0.0.1:{Server.ControlPort}", Session = "keyed", Bind = Addresses[i], BufferBytes = 1L << 20,
            RetainBytes = 4L << 20, SinkFactory = _ => Sinks[i], Log = SyncLog, NodeName = $"n{i}", Transport = (ITransport?)Tamper ?? Net,
            FailureTimeout = TimeSpan.FromSeconds(3), ConnectTimeout = TimeSpan.FromSeconds(10), Key = ClientKeys[i],
            LibsodiumCandidates = LibsodiumFor(i),
        };

        public Cluster Start()
        {
            _run = Server.RunAsync(_timeout.Token);
            _clients = [.. Enumerable.Range(0, Addresses.Length).Select(i => new DeployClient(OptionsFor(i)).RunAsync(Kill[i].Token))];
            return this;
        }

        public async Task<(SessionReport Report, ClientResult?[] Results, Exception?[] Errors)> FinishAsync()
        {
            var report = await _run!;
            var results = new ClientResult?[_clients.Length];
            var errors = new Exception?[_clients.Length];
            for (int i = 0; i < _clients.Length; i++)
            {
                try { results[i] = await _clients[i]; }
                catch (Exception e) when (e is OperationCanceledException or KaDeployException) { errors[i] = e; }
            }
            return (report, results, errors);
        }

        public async ValueTask DisposeAsync()
        {
            await Server.DisposeAsync();
            _timeout.Dispose();
        }
    }

    private static void AssertVerified(Cluster c, ClientResult?[] results, params int[] nodes)
    {
        foreach (int i in nodes)
        {
            Assert.True(results[i]?.Verified, $"n{i}: {results[i]?.Message}\n{c.Log}");
            Assert.Equal(-1, c.Sinks[i].FirstWrongByte);
            Assert.Equal(Length, c.Sinks[i].Written);
        }
    }

    /// <summary>kill -9 of node i: every link of it resets.</summary>
    private static void Crash(Cluster c, int i)
    {
        c.Kill[i].Cancel();
        foreach (var l in c.Net!.Links)
            if (l.Opener.Address.Equals(c.Addresses[i]) || l.Acceptor.Address.Equals(c.Addresses[i])) l.Reset();
    }

    private static ClientOptions Stranger(Cluster c, PresharedKey? key, CheckingSink sink, Action made) => new()
    {
        Server = $"127.0.0.1:{c.Server.ControlPort}", Session = "keyed", Bind = IPAddress.Parse("127.0.9.99"), BufferBytes = 1L << 20,
        SinkFactory = _ => { made(); return sink; }, Log = c.SyncLog, NodeName = "stranger", Transport = c.Net,
        ConnectTimeout = TimeSpan.FromSeconds(10), Key = key,
    };

    private static void AssertOneLine(string message) => Assert.DoesNotContain('\n', message);

    [Theory]
    [InlineData(StreamCipherKind.Aes256Gcm, "frames sealed with AES-256-GCM")]
    [InlineData(StreamCipherKind.Aegis256, "frames sealed with AEGIS-256 (libsodium 1.0.22")]
    [InlineData(StreamCipherKind.Aegis128L, "frames sealed with AEGIS-128L (libsodium 1.0.22")]
    [InlineData(null, "frames sealed with AEGIS-256 (libsodium 1.0.22")] // auto: AEGIS-256 where libsodium with AEGIS loads
    public async Task AKeyedChainInMemoryVerifiesEveryCopy(StreamCipherKind? cipher, string said)
    {
        using var key = PresharedKey.Generate();
        await using var c = new Cluster(3, key, _ => key, cipher: cipher).Start();
        var (report, results, _) = await c.FinishAsync();
        Assert.True(report.Success, report.Message + c.Log);
        AssertVerified(c, results, 0, 1, 2);
        Assert.DoesNotContain("failed authentication", c.Log.ToString());
        Assert.Contains(said, c.Log.ToString());
        Assert.Equal(cipher ?? StreamCipherKind.Aegis256, c.Server.Cipher);
    }

    [Fact]
    public async Task ANodeThatCannotRunTheChosenCipherRefusesInOneLineAndTheOthersVerify()
    {
        using var key = PresharedKey.Generate();
        // n1 finds no libsodium (as a node booted from an image without it would); it sits mid-chain, so n2 must be
        // re-attached past it.
        await using var c = new Cluster(3, key, _ => key, cipher: StreamCipherKind.Aegis256,
            libsodiumFor: i => i == 1 ? ["/nonexistent/ka-deploy/libsodium.so"] : null).Start();
        var (report, results, errors) = await c.FinishAsync();
        AssertVerified(c, results, 0, 2);
        var refused = Assert.IsType<CipherUnavailableException>(errors[1]);
        Assert.StartsWith("cannot run AEGIS-256: libsodium >= 1.0.19 with AEGIS not found beside ka-deploy (looked for /nonexistent/ka-deploy/libsodium.so)", refused.Message);
        AssertOneLine(refused.Message);
        Assert.Equal(0, c.Sinks[1].Written);
        Assert.Equal(["n1"], report.Failed.Select(f => f.Name));
        Assert.Contains(c.Log.ToString().Split('\n'), l => l.Contains("ka-deploy server:") && l.Contains("FAILED") && l.Contains("refused: cannot run AEGIS-256"));
    }

    [Fact]
    public async Task AKeyedTreeOnLoopbackSocketsVerifiesEveryCopy()
    {
        using var key = PresharedKey.Generate();
        await using var c = new Cluster(4, key, _ => key, tcp: true, arity: 2).Start();
        var (report, results, _) = await c.FinishAsync();
        Assert.True(report.Success, report.Message + c.Log);
        AssertVerified(c, results, 0, 1, 2, 3);
    }

    [Theory]
    [InlineData(true, false, "requires a key")]   // keyed server, node without a key
    [InlineData(false, true, "has no key")]       // unkeyed server, node with a key: it refuses to talk in clear
    [InlineData(true, true, "failed authentication")] // another key
    public async Task APeerWithoutTheKeyIsRefusedInOneLineOnBothSidesAndGetsNothing(bool serverKeyed, bool strangerKeyed, string why)
    {
        using var key = PresharedKey.Generate();
        using var other = PresharedKey.Generate();
        PresharedKey? serverKey = serverKeyed ? key : null;
        await using var c = new Cluster(2, serverKey, _ => serverKey).Start();
        var sink = new CheckingSink();
        bool planned = false;
        var refused = await Assert.ThrowsAnyAsync<KaDeployException>(() =>
            new DeployClient(Stranger(c, strangerKeyed ? (serverKeyed ? other : key) : null, sink, () => planned = true)).RunAsync(CancellationToken.None));
        Assert.Contains(why, refused.Message);
        AssertOneLine(refused.Message);
        var (report, results, _) = await c.FinishAsync();
        Assert.True(report.Success, report.Message + c.Log);
        AssertVerified(c, results, 0, 1);
        Assert.Equal(2, report.Nodes.Count); // the stranger never registered
        Assert.False(planned);
        Assert.Equal(0, sink.Written);
        // The server's side: one line naming the stranger's address.
        var line = Assert.Single(c.Log.ToString().Split('\n'), l => l.Contains("rejected control connection from 127.0.9.99"));
        Assert.Contains(serverKeyed && !strangerKeyed ? "requires a key" : strangerKeyed && !serverKeyed ? "has no key" : "failed authentication", line);
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public async Task AByteFlippedInOneSealedFrameIsCaughtByTheReceivingNodeBeforeItWritesOrForwardsIt(StreamCipherKind cipher)
    {
        using var key = PresharedKey.Generate();
        // n0's data link to n1 flips one byte of the ciphertext of the frame it sends after n0 has written a third.
        Cluster? self = null;
        await using var c = new Cluster(3, key, _ => key, sinkFor: (i, cl) => i == 0
            ? new CheckingSink { TripAt = Length / 3, Trip = () => self!.Tamper!.Arm() }
            : new CheckingSink(), tamperAt: IPAddress.Parse("127.0.9.10"), cipher: cipher);
        self = c;
        c.Start();
        var (report, results, _) = await c.FinishAsync();
        Assert.True(c.Tamper!.Fired, "the tamper never fired");
        // First: not one wrong byte reached a sink, on the node that got the bad frame or below it.
        for (int i = 0; i < 3; i++) Assert.True(c.Sinks[i].FirstWrongByte < 0, $"n{i} wrote a wrong byte at {c.Sinks[i].FirstWrongByte}");
        Assert.Contains("failed authentication", c.Log.ToString());
        // n1 (which received the bad frame) and n2 (below it) wrote no wrong byte; n1 was repaired and verified.
        Assert.True(report.Success, report.Message + c.Log);
        AssertVerified(c, results, 0, 1, 2);
        Assert.Contains(report.Nodes, n => n.Name == "n1" && n.Repairs.Count > 0);
    }

    [Fact]
    public async Task RepairStillWorksInAKeyedChain()
    {
        using var key = PresharedKey.Generate();
        Cluster? self = null;
        await using var c = new Cluster(4, key, _ => key, sinkFor: (i, cl) => i == 1
            ? new CheckingSink { TripAt = Length / 2, Trip = () => Crash(self!, 1) }
            : new CheckingSink());
        self = c;
        c.Start();
        var (report, results, _) = await c.FinishAsync();
        AssertVerified(c, results, 0, 2, 3);
        Assert.False(report.Nodes.Single(n => n.Name == "n1").Verified);
        Assert.Contains(report.Nodes, n => n.Repairs.Count > 0);
        Assert.Equal(["n1"], report.Failed.Select(f => f.Name));
    }
}

/// <summary>
/// A transport that, once armed, flips one byte of the next whole data frame a node sends to a child (a
/// tampering switch between two nodes). Frames are written one per call by the child sender, so the flip
/// lands at byte 100 of one frame: inside its ciphertext. The ring's slot is not touched (the write is copied).
/// </summary>
public sealed class TamperingTransport(MemoryTransport inner, IPAddress sender) : ITransport
{
    private int _armed;
    private int _fired;

    /// <summary>The next frame of at least 1000 bytes from <c>sender</c>'s data listener gets one byte flipped.</summary>
    public void Arm() => Volatile.Write(ref _armed, 1);

    /// <summary>A byte was flipped.</summary>
    public bool Fired => Volatile.Read(ref _fired) != 0;

    public Task<Connection> ConnectAsync(IPEndPoint remote, IPAddress? local, CancellationToken cancellationToken) =>
        inner.ConnectAsync(remote, local, cancellationToken);

    public IConnectionListener Listen(IPAddress address, int port, string what)
    {
        var l = inner.Listen(address, port, what);
        return address.Equals(sender) && what == "data" ? new Listener(l, this) : l;
    }

    private bool TakeShot(int length) => length >= 1000 && Interlocked.Exchange(ref _armed, 0) == 1 && Interlocked.Exchange(ref _fired, 1) == 0;

    private sealed class Listener(IConnectionListener l, TamperingTransport t) : IConnectionListener
    {
        public IPEndPoint LocalEndPoint => l.LocalEndPoint;
        public async ValueTask<Connection> AcceptAsync(CancellationToken cancellationToken) => new Tampered(await l.AcceptAsync(cancellationToken), t);
        public void Dispose() => l.Dispose();
    }

    private sealed class Tampered(Connection c, TamperingTransport t) : Connection
    {
        private readonly FlippingStream _stream = new(c.Stream, t);
        public override Stream Stream => _stream;
        public override IPEndPoint RemoteEndPoint => c.RemoteEndPoint;
        public override IPEndPoint LocalEndPoint => c.LocalEndPoint;
        public override void ShutdownSend() => c.ShutdownSend();
        protected override void CloseTransport() => c.Abort(AbortReason ?? "closed");
    }

    private sealed class FlippingStream(Stream s, TamperingTransport t) : DuplexStream
    {
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (!t.TakeShot(buffer.Length)) return s.WriteAsync(buffer, cancellationToken);
            var copy = buffer.ToArray();
            copy[100] ^= 0x01;
            return s.WriteAsync(copy, cancellationToken);
        }
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => s.ReadAsync(buffer, cancellationToken);
        public override Task FlushAsync(CancellationToken cancellationToken) => s.FlushAsync(cancellationToken);
    }
}
