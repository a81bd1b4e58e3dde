using System.Net;
using KaDeploy.Reporting;
using KaDeploy.Security;
using KaDeploy.Session;
using KaDeploy.Tests.TestSupport;
using KaDeploy.Transport;

namespace KaDeploy.Tests.Session;

/// <summary>
/// A node that refuses the session right after its Plan (it cannot run the chosen cipher) while its child is still
/// making its first link to it: the server re-attaches the child at once, and the child follows that word at once
/// instead of retrying the dead parent for the whole link timeout (30 s by default, 10 minutes here, so a child that
/// waits it out cannot pass).
/// </summary>
public class EarlyRefusalSessionTests
{
    private const long Length = 3_000_000;

    [Fact]
    public async Task TheChildOfANodeThatRefusesRightAfterItsPlanIsReattachedWithoutWaitingOutItsLinkTimeout()
    {
        using var key = PresharedKey.Generate();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var net = new MemoryTransport { WindowBytes = 128 * 1024 };
        var log = new StringWriter();
        var syncLog = TextWriter.Synchronized(log);
        var patience = TimeSpan.FromMinutes(10);
        await using var server = new DeployServer(new ServerOptions
        {
            Source = new GeneratedSource(Length, seed: 3), Clients = 3, Arity = 1, BufferBytes = 1L << 20, Bind = IPAddress.Loopback,
            ControlPort = 0, Discovery = false, Session = "refusal", Log = syncLog, Transport = net, Key = key,
            Cipher = StreamCipherKind.Aegis256, LinkTimeout = patience, SlowNodeAfter = TimeSpan.Zero,
        });
        var run = server.RunAsync(timeout.Token);
        var sinks = new[] { new MemorySink(), new MemorySink(), new MemorySink() };
        var clients = Enumerable.Range(0, 3).Select(i => new DeployClient(new ClientOptions
        {
            Server = $"127.0.0.1:{server.ControlPort}", Session = "refusal", Bind = IPAddress.Parse($"127.0.11.{i + 10}"),
            BufferBytes = 1L << 20, SinkFactory = _ => sinks[i], Log = syncLog, NodeName = $"n{i}", Transport = net, Key = key,
            LinkTimeout = patience,
            // n1, mid-chain, finds no libsodium: it refuses in one line after its Plan, while n2 links to it.
            LibsodiumCandidates = i == 1 ? ["/nonexistent/ka-deploy/libsodium.so"] : null,
        }).RunAsync(timeout.Token)).ToArray();

        // Bounded by Eventually's deadline (60 s), far short of the 10-minute link timeout a child that ignored the
        // server's word would wait out.
        await Eventually.HoldsAsync(() => run.IsCompleted, "the session's end, well before the link timeout");
        SessionReport report = await run;
        Assert.Equal(["n1"], report.Failed.Select(f => f.Name));
        var expected = GeneratedSource.Expected(Length, 3, false);
        foreach (int i in new[] { 0, 2 })
        {
            var result = await clients[i];
            Assert.True(result.Verified, $"n{i}: {result.Message}\n{log}");
            Assert.True(expected.AsSpan().SequenceEqual(sinks[i].Data.ToArray()), $"n{i}: copy differs");
        }
        await Assert.ThrowsAsync<CipherUnavailableException>(() => clients[1]);
        var n2 = report.Nodes.Single(n => n.Name == "n2");
        var n0 = report.Nodes.Single(n => n.Name == "n0");
        // Re-attached on the server's word (past n1, to n0), not after a failed link of its own.
        Assert.Equal(n0.Id, n2.Repairs.Single().NewParentId);
        Assert.DoesNotContain("cannot link at offset 0", log.ToString());
    }

    [Fact]
    public async Task AChildHalfwayThroughItsFirstHandshakeWithAParentThatThenFailsFollowsTheServersWordAtOnce()
    {
        // n1 cannot make its sink (a missing disk), but only once n2's first data link to it is open and waiting for a
        // handshake n1 will never answer: n2 must drop that attempt on the server's Reattach, not when its handshake
        // times out (then it would also ask the server for a parent of its own: a second, needless repair).
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(3));
        var net = new MemoryTransport { WindowBytes = 128 * 1024 };
        var log = new StringWriter();
        var syncLog = TextWriter.Synchronized(log);
        var patience = TimeSpan.FromMinutes(10);
        IPAddress Address(int i) => IPAddress.Parse($"127.0.12.{i + 10}");
        await using var server = new DeployServer(new ServerOptions
        {
            Source = new GeneratedSource(Length, seed: 4), Clients = 3, Arity = 1, BufferBytes = 1L << 20, Bind = IPAddress.Loopback,
            ControlPort = 0, Discovery = false, Session = "refusal", Log = syncLog, Transport = net, LinkTimeout = patience,
            SlowNodeAfter = TimeSpan.Zero,
        });
        var run = server.RunAsync(timeout.Token);
        var sinks = new[] { new MemorySink(), new MemorySink(), new MemorySink() };
        var clients = Enumerable.Range(0, 3).Select(i => new DeployClient(new ClientOptions
        {
            Server = $"127.0.0.1:{server.ControlPort}", Session = "refusal", Bind = Address(i), BufferBytes = 1L << 20,
            Log = syncLog, NodeName = $"n{i}", Transport = net, LinkTimeout = patience,
            SinkFactory = i != 1 ? _ => sinks[i] : _ =>
            {
                // A bounded wait on a condition (n2's link to us is open), then the failure.
                Assert.True(SpinWait.SpinUntil(() => net.Links.Any(l => l.Opener.Address.Equals(Address(2)) && l.Acceptor.Address.Equals(Address(1))),
                    Eventually.Deadline), "n2's first link to n1");
                throw new KaDeployException("no disk /dev/vdz (simulated by the test)");
            },
        }).RunAsync(timeout.Token)).ToArray();

        await Eventually.HoldsAsync(() => run.IsCompleted, "the session's end");
        SessionReport report = await run;
        Assert.Equal(["n1"], report.Failed.Select(f => f.Name));
        foreach (int i in new[] { 0, 2 }) Assert.True((await clients[i]).Verified, $"n{i}\n{log}");
        var n2 = report.Nodes.Single(n => n.Name == "n2");
        Assert.Equal(report.Nodes.Single(n => n.Name == "n0").Id, n2.Repairs.Single().NewParentId);
        Assert.DoesNotContain("cannot link at offset 0", log.ToString());
    }
}
