using System.Net;
using System.Net.Sockets;
using KaDeploy.Protocol;
using KaDeploy.Session;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Session;

/// <summary>Garbage, strangers and quitters on the server's ports: one line each, and the session goes on.</summary>
public class HostileInputTests
{
    private static (DeployServer Server, StringWriter Log) NewServer(int clients, long length = 2_000_000)
    {
        var log = new LockedStringWriter();
        var server = new DeployServer(new ServerOptions
        {
            Source = new GeneratedSource(length), Clients = clients, Bind = IPAddress.Loopback, ControlPort = 0,
            Discovery = false, Session = "test", Log = log,
        });
        return (server, log);
    }

    /// <summary>A server already running its session, torn down with the test.</summary>
    private sealed class RunningServer(DeployServer server, StringWriter log) : IAsyncDisposable
    {
        public DeployServer Server { get; } = server;
        public StringWriter Log { get; } = log;
        public CancellationTokenSource Cts { get; } = new(TimeSpan.FromMinutes(1));
        public Task<KaDeploy.Reporting.SessionReport> Run { get; private set; } = null!;
        public RunningServer Started() { Run = Server.RunAsync(Cts.Token); return this; }

        public async ValueTask DisposeAsync()
        {
            await Server.DisposeAsync();
            Cts.Dispose();
        }
    }

    private static RunningServer Start(int clients)
    {
        var (server, log) = NewServer(clients);
        return new RunningServer(server, log).Started();
    }

    /// <summary>A raw control connection, to say what a real client never would.</summary>
    private static async Task<ControlChannel> RawControlAsync(int port)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await s.ConnectAsync(IPAddress.Loopback, port);
        var stream = new NetworkStream(s, ownsSocket: true);
        await Handshake.OpenAsync(stream, HandshakeChannel.Control, "test", null, "server", default); // the v2 handshake, unkeyed
        return new ControlChannel(stream);
    }

    private static DeployClient NewClient(DeployServer server, MemorySink sink, string session = "test") => new(new ClientOptions
    {
        Server = $"127.0.0.1:{server.ControlPort}", Session = session, Bind = LoopbackSession.NextAddress(),
        BufferBytes = 4 << 20, SinkFactory = _ => sink, NodeName = "", ConnectTimeout = TimeSpan.FromSeconds(5),
    });

    // The data port is only served once the session starts: there, send and leave without waiting for an answer.
    private static async Task SendRawAsync(int port, byte[] bytes, bool waitForClose = true)
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await s.ConnectAsync(IPAddress.Loopback, port);
        await s.SendAsync(bytes);
        s.Shutdown(SocketShutdown.Send);
        if (!waitForClose) return;
        var buf = new byte[256];
        try { while (await s.ReceiveAsync(buf) > 0) { } } catch (SocketException) { }
    }

    [Fact]
    public async Task GarbageOnBothPortsIsLoggedAndTheSessionCompletes()
    {
        await using var session = Start(2);
        var (server, log, cts, run) = (session.Server, session.Log, session.Cts, session.Run);
        var rng = new Random(7);
        for (int i = 0; i < 5; i++)
        {
            var junk = new byte[rng.Next(1, 3000)];
            rng.NextBytes(junk);
            await SendRawAsync(server.ControlPort, junk);
            await SendRawAsync(server.DataPort, junk, waitForClose: false);
        }
        await SendRawAsync(server.ControlPort, "GET / HTTP/1.0\r\n\r\n"u8.ToArray());
        await SendRawAsync(server.ControlPort, [0x10, 0, 0, 0, 1]); // a frame cut short
        var sinks = new[] { new MemorySink(), new MemorySink() };
        var results = await Task.WhenAll(sinks.Select(s => NewClient(server, s).RunAsync(cts.Token)));
        var report = await run;
        Assert.True(report.Success, report.Message + log);
        Assert.All(results, r => Assert.True(r.Verified, r.Message));
        Assert.Contains("rejected control connection", log.ToString());
        Assert.DoesNotContain("   at ", log.ToString()); // one-line errors, no stack traces
    }

    [Fact]
    public async Task AClientOfAnotherSessionIsRefusedClearly()
    {
        await using var session = Start(1);
        var (server, log, cts, run) = (session.Server, session.Log, session.Cts, session.Run);
        var e = await Assert.ThrowsAsync<KaDeployException>(() => NewClient(server, new MemorySink(), "other").RunAsync(cts.Token));
        Assert.Contains("session 'other' is not this server's session 'test'", e.Message);
        var ok = await NewClient(server, new MemorySink()).RunAsync(cts.Token);
        Assert.True(ok.Verified, ok.Message);
        Assert.True((await run).Success);
    }

    [Fact]
    public async Task AClientOfAnotherProtocolVersionIsRefusedClearly()
    {
        await using var session = Start(1);
        var (server, log, cts, run) = (session.Server, session.Log, session.Cts, session.Run);
        await using var channel = await RawControlAsync(server.ControlPort);
        await channel.SendAsync(new Hello(99, HelloRole.Client, "test", "x", "", 1), cts.Token);
        var refusal = Assert.IsType<Refuse>(await channel.ReceiveAsync(cts.Token));
        Assert.Contains("protocol version 99", refusal.Reason);
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run);
    }

    [Fact]
    public async Task AClientThatVanishesBeforeTheStartIsForgotten()
    {
        await using var session = Start(2);
        var (server, log, cts, run) = (session.Server, session.Log, session.Cts, session.Run);
        await using (var channel = await RawControlAsync(server.ControlPort))
        {
            await channel.SendAsync(new Hello(ProtocolConstants.Version, HelloRole.Client, "test", "quitter", "", 5000), cts.Token);
            await channel.ExpectAsync<Welcome>(cts.Token);
        } // gone before the session is full
        await Eventually.HoldsAsync(() => log.ToString().Contains("left before the start"), "the server to forget the quitter");
        var results = await Task.WhenAll(NewClient(server, new MemorySink()).RunAsync(cts.Token), NewClient(server, new MemorySink()).RunAsync(cts.Token));
        var report = await run;
        Assert.All(results, r => Assert.True(r.Verified, r.Message));
        Assert.True(report.Success, report.Message);
        Assert.Equal(2, report.Nodes.Count);
        Assert.Contains("quitter left before the start", log.ToString());
    }

    [Fact]
    public async Task ASecondServerOnTheSamePortFailsWithAClearMessage()
    {
        var (server, _) = NewServer(1);
        await using var __ = server;
        var e = Assert.Throws<KaDeployException>(() => new DeployServer(new ServerOptions
        {
            Source = new GeneratedSource(1), Bind = IPAddress.Loopback, ControlPort = server.ControlPort, Discovery = false,
        }));
        Assert.Contains("already in use", e.Message);
    }

    [Fact]
    public async Task GoStartsAWaitingServerWithTheClientsItHas()
    {
        await using var session = Start(5);
        var (server, log, cts, run) = (session.Server, session.Log, session.Cts, session.Run);
        var sinks = new[] { new MemorySink(), new MemorySink() };
        var clients = sinks.Select(s => NewClient(server, s).RunAsync(cts.Token)).ToArray();
        var options = new ClientOptions { Server = $"127.0.0.1:{server.ControlPort}", Session = "test", SinkFactory = _ => throw new InvalidOperationException() };
        // `go` starts with whoever is registered at that moment: wait until both are, as an operator would.
        await Eventually.HoldsAsync(() => log.ToString().Contains(": 2/5"), "both clients to register");
        string said = await DeployClient.SendGoAsync(options, cts.Token);
        Assert.Contains("starts with 2 of 5", said);
        var results = await Task.WhenAll(clients);
        var report = await run;
        Assert.All(results, r => Assert.True(r.Verified, r.Message));
        Assert.True(report.Success, report.Message);
        Assert.Equal(2, report.Nodes.Count);
    }

    [Fact]
    public async Task AClientStartedBeforeItsServerKeepsTrying()
    {
        // The client's server address is a socket bound but not listening: connections are refused, and
        // no one else can take the port meanwhile. Once the client has been refused (it says so), the
        // socket starts listening and passes connections on to a server that has just come up.
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        var gate = FaultProxy.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        int port = ((IPEndPoint)gate.LocalEndPoint!).Port;
        var log = new LockedStringWriter();
        var sink = new MemorySink();
        var client = new DeployClient(new ClientOptions
        {
            Server = $"127.0.0.1:{port}", Session = "test", Bind = LoopbackSession.NextAddress(), SinkFactory = _ => sink, NodeName = "",
            Log = log,
        }).RunAsync(cts.Token);
        await Eventually.HoldsAsync(() => log.ToString().Contains("waiting for the server") || client.IsCompleted, "the client to be refused once");
        if (client.IsCompleted) await client; // surfaces the reason it gave up
        await using var server = new DeployServer(new ServerOptions
        {
            Source = new GeneratedSource(100_000), Bind = IPAddress.Loopback, ControlPort = 0, Discovery = false, Session = "test",
        });
        await using var up = new FaultProxy(gate, new IPEndPoint(IPAddress.Loopback, server.ControlPort));
        var report = await server.RunAsync(cts.Token);
        Assert.True((await client).Verified);
        Assert.True(report.Success, report.Message);
    }
}
