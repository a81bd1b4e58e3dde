using KaDeploy.Protocol;
using KaDeploy.Reporting;

namespace KaDeploy.Tests.Session;

public class LoopbackSessionTests
{
    [Theory]
    [InlineData(1, 1, false)]
    [InlineData(4, 1, false)]
    [InlineData(5, 3, false)]
    [InlineData(4, 1, true)]
    [InlineData(7, 3, true)]
    public async Task EveryNodeGetsTheExactStream(int clients, int arity, bool zstd)
    {
        const long length = 5_000_000;
        var source = new GeneratedSource(length, seed: clients, compressible: zstd);
        var (report, results, sinks) = await LoopbackSession.RunAsync(source, clients, arity,
            zstd ? WireCompression.Zstd : WireCompression.None);
        var expected = GeneratedSource.Expected(length, clients, zstd);
        Assert.True(report.Success, report.Message + "\n" + report.FormatTable());
        Assert.All(results, r => Assert.True(r.Verified, r.Message));
        Assert.All(sinks, s => Assert.Equal(expected, s.Data.ToArray()));
        Assert.Equal(clients, report.Nodes.Count);
        Assert.All(report.Nodes, n => Assert.Equal(NodeState.Verified, n.State));
        if (zstd) Assert.True(report.WireBytes < length / 4, $"zstd sent {report.WireBytes} wire bytes for {length}");
        if (arity == 1) Assert.Equal(Enumerable.Range(1, clients), report.Nodes.Select(n => n.Depth).Order());
    }

    [Fact]
    public async Task AFailingSinkFailsOnlyItsNodeAndTheChainGoesOn()
    {
        const long length = 3_000_000;
        var (report, results, sinks) = await LoopbackSession.RunAsync(new GeneratedSource(length), 3, 1,
            sinkFor: i => i == 0 ? new MemorySink { FailAt = n => n > 1_000_000 } : new MemorySink());
        Assert.False(report.Success);
        var failed = Assert.Single(results, r => !r.Verified);
        Assert.Contains("disk full", failed.Message);
        Assert.Equal(2, results.Count(r => r.Verified));
        Assert.Equal(2, sinks.Count(s => s.Data.Length == length));
        Assert.Contains(report.Nodes, n => n.State == NodeState.Failed && n.Message.Contains("disk full"));
    }

    [Fact]
    public async Task EmptyPayloadIsVerified()
    {
        var (report, results, _) = await LoopbackSession.RunAsync(new GeneratedSource(0), 2, 1);
        Assert.True(report.Success, report.Message);
        Assert.All(results, r => Assert.True(r.Verified, r.Message));
    }
}

public class NodeFailureTests
{
    [Fact]
    public async Task ANodeThatDiesMidStreamFailsAloneAndItsSiblingsFinish()
    {
        // Arity 3 with three clients: all are the server's children, so the dead one has no subtree.
        const long length = 40_000_000;
        using var kill = new CancellationTokenSource();
        var log = new StringWriter();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await using var server = new KaDeploy.Session.DeployServer(new KaDeploy.Session.ServerOptions
        {
            Source = new GeneratedSource(length), Clients = 3, Arity = 3, BufferBytes = 4 << 20,
            Bind = System.Net.IPAddress.Loopback, ControlPort = 0, Discovery = false, Session = "test", Log = TextWriter.Synchronized(log),
        });
        var run = server.RunAsync(timeout.Token);
        var victimSink = new MemorySink { FailAt = n => { if (n > 5_000_000) kill.Cancel(); return false; } };
        var sinks = new[] { victimSink, new MemorySink(), new MemorySink() };
        var clients = sinks.Select((s, i) => new KaDeploy.Session.DeployClient(new KaDeploy.Session.ClientOptions
        {
            Server = $"127.0.0.1:{server.ControlPort}", Session = "test", Bind = LoopbackSession.NextAddress(), BufferBytes = 4 << 20,
            SinkFactory = _ => s, NodeName = $"n{i}",
        }).RunAsync(i == 0 ? kill.Token : timeout.Token)).ToArray();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => clients[0]);
        Assert.All(await Task.WhenAll(clients[1], clients[2]), r => Assert.True(r.Verified, r.Message));
        var report = await run;
        Assert.False(report.Success);
        Assert.Equal(2, report.Nodes.Count(n => n.Verified));
        var dead = Assert.Single(report.Nodes, n => !n.Verified);
        Assert.Equal("n0", dead.Name);
        Assert.Contains("lost", dead.Message);
    }
}

/// <summary>One hung consumer must not hold the whole chain: after the stall limit it is given up.</summary>
public class StallTests
{
    /// <summary>A sink whose disk stops answering after some bytes: it never reads again.</summary>
    private sealed class HangingSink(long after) : KaDeploy.Payloads.IPayloadSink
    {
        public string Description => "a disk that stops answering";
        public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
        {
            var buffer = new byte[65536];
            long seen = 0;
            int n;
            while ((n = await input.ReadAsync(buffer, cancellationToken)) > 0)
                if ((seen += n) > after) await Task.Delay(Timeout.Infinite, cancellationToken);
        }
    }

    private static async Task<(KaDeploy.Reporting.SessionReport Report, KaDeploy.Session.ClientResult[] Results)> RunAsync(
        int arity, TimeSpan serverStall, TimeSpan clientStall, Func<int, KaDeploy.Payloads.IPayloadSink> sinks, Func<int, bool> hangsForever)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await using var server = new KaDeploy.Session.DeployServer(new KaDeploy.Session.ServerOptions
        {
            Source = new GeneratedSource(30_000_000), Clients = 3, Arity = arity, BufferBytes = 2 << 20, StallTimeout = serverStall,
            Bind = System.Net.IPAddress.Loopback, ControlPort = 0, Discovery = false, Session = "test",
        });
        var run = server.RunAsync(timeout.Token);
        var clients = Enumerable.Range(0, 3).Select(i => new KaDeploy.Session.DeployClient(new KaDeploy.Session.ClientOptions
        {
            Server = $"127.0.0.1:{server.ControlPort}", Session = "test", Bind = LoopbackSession.NextAddress(), BufferBytes = 2 << 20,
            StallTimeout = clientStall, SinkFactory = _ => sinks(i), NodeName = $"n{i}",
        }).RunAsync(timeout.Token)).ToArray();
        // A node whose disk hangs for good never finishes: the others and the server must not wait for it.
        var report = await run;
        var finished = await Task.WhenAll(clients.Where((c, i) => !hangsForever(i)));
        await timeout.CancelAsync();
        await Task.WhenAll(clients.Select(c => c.ContinueWith(_ => { }, TaskScheduler.Default)));
        return (report, finished);
    }

    [Fact]
    public async Task ANodeWhoseDiskHangsGivesUpItsCopyAndKeepsRelaying()
    {
        // Chain: the hanging node is first, the other two are behind it and must still get everything.
        var (report, results) = await RunAsync(1, TimeSpan.FromMinutes(5), TimeSpan.FromSeconds(2),
            i => i == 0 ? new HangingSink(3_000_000) : new MemorySink(), _ => false);
        var hung = Assert.Single(results, r => !r.Verified);
        Assert.Contains("local sink stalled", hung.Message);
        Assert.Equal(2, results.Count(r => r.Verified));
        Assert.Equal(2, report.Nodes.Count(n => n.Verified));
    }

    [Fact]
    public async Task AChildThatStopsReadingIsDroppedAndItsSiblingsFinish()
    {
        // Arity 3: all three hang off the server. Node 0's disk hangs and it never gives up on it itself,
        // so it stops reading its link: the server drops that link after 2 s.
        var (report, results) = await RunAsync(3, TimeSpan.FromSeconds(2), TimeSpan.Zero,
            i => i == 0 ? new HangingSink(3_000_000) : new MemorySink(), i => i == 0);
        Assert.Equal(2, results.Count(r => r.Verified));
        Assert.False(report.Success);
        Assert.Contains("took nothing for 2 s", Assert.Single(report.Nodes, n => !n.Verified).Message);
        Assert.Equal(2, report.Nodes.Count(n => n.Verified));
    }
}

public class SourceFailureTests
{
    [Fact]
    public async Task AFailingSourceAbortsEveryNodeWithTheReason()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        await using var server = new KaDeploy.Session.DeployServer(new KaDeploy.Session.ServerOptions
        {
            Source = new KaDeploy.Payloads.Exec.CommandSource("head -c 1000000 /dev/urandom; exit 2"), Clients = 2,
            Bind = System.Net.IPAddress.Loopback, ControlPort = 0, Discovery = false, Session = "test",
        });
        var run = server.RunAsync(timeout.Token);
        var logs = Enumerable.Range(0, 2).Select(_ => new StringWriter()).ToArray();
        var clients = logs.Select(log => new KaDeploy.Session.DeployClient(new KaDeploy.Session.ClientOptions
        {
            Server = $"127.0.0.1:{server.ControlPort}", Session = "test", Bind = LoopbackSession.NextAddress(),
            SinkFactory = _ => new MemorySink(), NodeName = "", Log = TextWriter.Synchronized(log),
        }).RunAsync(timeout.Token)).ToArray();
        var report = await run;
        Assert.False(report.Success);
        Assert.Contains("exited with status 2", report.Message);
        foreach (var c in clients)
        {
            // Never a verified copy, and the node's verdict names the server's reason, not "cancelled".
            var outcome = await Record.ExceptionAsync(async () =>
            {
                var result = await c;
                Assert.False(result.Verified);
                Assert.Contains("server aborted: command", result.Message);
            });
            if (outcome is not null) Assert.Contains("server aborted: command", outcome.Message);
        }
        // What the operator reads on the node's console: its FAILED line gives the reason too.
        foreach (var log in logs)
        {
            string failed = Assert.Single(log.ToString().Split('\n'), l => l.Contains("FAILED"));
            Assert.Contains("exited with status 2", failed);
        }
    }
}
