using System.Net;
using KaDeploy.Payloads;
using KaDeploy.Protocol;
using KaDeploy.Reporting;
using KaDeploy.Session;
using KaDeploy.Tests.TestSupport;
using KaDeploy.Transport;

namespace KaDeploy.Tests.Session;

/// <summary>
/// Whole sessions over the in-memory transport with nodes killed, stopped and cut off mid-stream
/// (issue 8): every other copy is verified and identical, the failed node is reported with its reason,
/// and orphans say where they resumed.
/// </summary>
public class RepairSessionTests
{
    private const long Length = 12_000_000;

    /// <summary>A sink that runs an action once, when it has taken <paramref name="at"/> bytes.</summary>
    private sealed class TripwireSink(long at, Action trip, Task? gate = null) : IPayloadSink
    {
        private int _tripped;
        public MemoryStream Data { get; } = new();
        public string Description => "memory (tripwire)";

        public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
        {
            // A gated sink takes nothing until the test opens it: its ring fills, and holds its parent's.
            if (gate is not null) await gate.WaitAsync(cancellationToken);
            var buffer = new byte[65536];
            int n;
            while ((n = await input.ReadAsync(buffer, cancellationToken)) > 0)
            {
                Data.Write(buffer, 0, n);
                if (Data.Length >= at && Interlocked.Exchange(ref _tripped, 1) == 0) trip();
            }
        }
    }

    private sealed class TeeWriter(TextWriter a, TextWriter b) : TextWriter
    {
        public override System.Text.Encoding Encoding => a.Encoding;
        public override void Write(char value) { a.Write(value); b.Write(value); }
        public override void WriteLine(string? value) { a.WriteLine(value); b.WriteLine($"{DateTime.UtcNow:HH:mm:ss.fff} {value}"); }
    }

    private sealed class Cluster : IAsyncDisposable
    {
        public MemoryTransport Net { get; } = new() { WindowBytes = 128 * 1024 };
        public StringWriter Log { get; } = new LockedStringWriter();
        public TextWriter SyncLog { get; }
        public IPAddress[] Addresses { get; }
        public CancellationTokenSource[] Kill { get; }
        public TripwireSink[] Sinks { get; }
        public DeployServer Server { get; }
        private readonly CancellationTokenSource _timeout = new(TimeSpan.FromMinutes(2));
        private Task<SessionReport>? _run;
        private Task<ClientResult>[] _clients = [];

        /// <param name="failureSeconds">Silence that declares a node failed. 3 s for the tests that stop a node; the tests
        /// whose nodes only crash (their links reset at once) take more, so a loaded machine that starves a heartbeat or a
        /// held link for a few seconds does not add a failure the test did not cause.</param>
        public Cluster(int clients, int arity, long buffer = 1L << 20, long retain = 4L << 20, bool noSpool = false,
            Func<int, (long At, Action<Cluster> Trip)?>? tripFor = null, Func<int, Task?>? gateFor = null, double failureSeconds = 3,
            bool waitRelease = false)
        {
            _waitRelease = waitRelease;
            _failure = TimeSpan.FromSeconds(failureSeconds);
            SyncLog = TextWriter.Synchronized(Environment.GetEnvironmentVariable("KD_TEST_LOG") is { } file
                ? new TeeWriter(Log, new StreamWriter(file, append: true) { AutoFlush = true }) : Log);
            Addresses = [.. Enumerable.Range(0, clients).Select(i => IPAddress.Parse($"127.0.9.{i + 10}"))];
            Kill = [.. Enumerable.Range(0, clients).Select(_ => CancellationTokenSource.CreateLinkedTokenSource(_timeout.Token))];
            Sinks = [.. Enumerable.Range(0, clients).Select(i =>
                tripFor?.Invoke(i) is { } t ? new TripwireSink(t.At, () => t.Trip(this), gateFor?.Invoke(i))
                    : new TripwireSink(long.MaxValue, () => { }, gateFor?.Invoke(i)))];
            Server = new DeployServer(new ServerOptions
            {
                Source = new GeneratedSource(Length, seed: 8), Clients = clients, Arity = arity, BufferBytes = buffer,
                Bind = IPAddress.Loopback, ControlPort = 0, Discovery = false, Session = "repair", Log = SyncLog,
                Transport = Net, FailureTimeout = _failure, NoSpool = noSpool, SlowNodeAfter = TimeSpan.Zero,
            });
            Retain = retain;
        }

        public long Retain { get; }
        private readonly TimeSpan _failure;
        private readonly bool _waitRelease;

        public Cluster Start()
        {
            _run = Server.RunAsync(_timeout.Token);
            _clients = [.. Enumerable.Range(0, Addresses.Length).Select(i => new DeployClient(new ClientOptions
            {
                Server = $"127.0.0.1:{Server.ControlPort}", Session = "repair", Bind = Addresses[i], BufferBytes = 1L << 20,
                RetainBytes = Retain, SinkFactory = _ => Sinks[i], Log = SyncLog, NodeName = $"n{i}", Transport = Net,
                FailureTimeout = _failure, WaitRelease = _waitRelease,
            }).RunAsync(Kill[i].Token))];
            return this;
        }

        /// <summary>kill -9: every link of the node resets, its process is gone.</summary>
        public void Crash(int i)
        {
            Kill[i].Cancel();
            foreach (var l in Net.Links)
                if (l.Opener.Address.Equals(Addresses[i]) || l.Acceptor.Address.Equals(Addresses[i])) l.Reset();
        }

        /// <summary>SIGSTOP: the node's links stop moving, nobody is told.</summary>
        public void Stop(int i)
        {
            foreach (var l in Net.Links)
                if (l.Opener.Address.Equals(Addresses[i]) || l.Acceptor.Address.Equals(Addresses[i])) l.Stall();
        }

        /// <summary>SIGCONT.</summary>
        public void Continue(int i)
        {
            foreach (var l in Net.Links)
                if (l.Opener.Address.Equals(Addresses[i]) || l.Acceptor.Address.Equals(Addresses[i])) l.Resume();
        }

        public async Task<(SessionReport Report, ClientResult?[] Results)> FinishAsync()
        {
            var report = await _run!;
            return (report, await ClientResults.CollectAsync(_clients));
        }

        public NodeReport NodeNamed(SessionReport r, int i) => r.Nodes.Single(n => n.Name == $"n{i}");

        /// <summary>The server's view of node n<paramref name="i"/> (its verified offset, from its heartbeats).</summary>
        public long OffsetSeen(int i) => Server.Nodes.FirstOrDefault(n => n.Report.Name == $"n{i}")?.VerifiedOffset ?? 0;

        /// <summary>Index of the node the server calls <paramref name="id"/>.</summary>
        public int IndexOf(SessionReport r, int id) => int.Parse(r.Nodes.Single(n => n.Id == id).Name[1..], System.Globalization.CultureInfo.InvariantCulture);

        public async ValueTask DisposeAsync()
        {
            await Server.DisposeAsync();
            _timeout.Dispose();
        }
    }

    private static void AssertOthersIdentical(Cluster c, SessionReport report, ClientResult?[] results, params int[] failed)
    {
        var expected = GeneratedSource.Expected(Length, 8, false);
        for (int i = 0; i < results.Length; i++)
        {
            if (failed.Contains(i))
            {
                Assert.False(c.NodeNamed(report, i).Verified);
                continue;
            }
            Assert.True(results[i]?.Verified, $"n{i}: {results[i]?.Message}\n{c.Log}");
            Assert.True(expected.AsSpan().SequenceEqual(c.Sinks[i].Data.ToArray()), $"n{i}: copy differs");
            Assert.True(c.NodeNamed(report, i).Verified);
        }
        Assert.Equal(failed.Select(i => $"n{i}").Order(), report.Failed.Select(f => f.Name).Order());
        Assert.Equal(results.Length - failed.Length, report.Succeeded.Count);
        Assert.Equal(failed.Length == 0, report.Success);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task AMiddleNodeKilledHalfwayLosesOnlyThatNode(int arity)
    {
        // Node n1 is a middle node in a chain and has children in trees of arity 2 and 3 (7 nodes).
        await using var c = new Cluster(7, arity, tripFor: i => i == 1 ? (Length / 2, cl => cl.Crash(1)) : null).Start();
        var (report, results) = await c.FinishAsync();
        AssertOthersIdentical(c, report, results, 1);
        Assert.Contains("declared failed", c.NodeNamed(report, 1).Message);
        Assert.Contains(report.Nodes, n => n.Repairs.Count > 0 && n.Repairs[0].Reason.Contains($"node {c.NodeNamed(report, 1).Id}"));
    }

    [Fact]
    public async Task AStoppedNodeIsDeclaredFailedForItsSilenceAndIsRefusedWhenItComesBack()
    {
        await using var c = new Cluster(5, 1, tripFor: i => i == 2 ? (Length / 2, cl => cl.Stop(2)) : null).Start();
        var serverRun = c.FinishAsync();
        // Wait for the verdict on the stopped node, then let it run again: it must not rejoin.
        while (!c.Log.ToString().Contains("n2 declared failed")) await Task.Delay(50);
        c.Continue(2);
        var (report, results) = await serverRun;
        AssertOthersIdentical(c, report, results, 2);
        Assert.Contains("no heartbeat", c.NodeNamed(report, 2).Message);
        Assert.False(results[2]?.Verified ?? false);
    }

    [Fact]
    public async Task ANodeComingBackAfterBeingDeclaredFailedIsRefusedRegistration()
    {
        await using var c = new Cluster(3, 1, tripFor: i => i == 1 ? (Length / 2, cl => cl.Stop(1)) : null).Start();
        var run = c.FinishAsync();
        while (!c.Log.ToString().Contains("n1 declared failed")) await Task.Delay(50);
        // The same node (name and address) registers again, as a restarted client would.
        var again = new DeployClient(new ClientOptions
        {
            Server = $"127.0.0.1:{c.Server.ControlPort}", Session = "repair", Bind = c.Addresses[1], NodeName = "n1",
            SinkFactory = _ => new MemorySink(), Transport = c.Net, ConnectTimeout = TimeSpan.FromSeconds(5),
        });
        var refused = await Assert.ThrowsAsync<KaDeployException>(() => again.RunAsync(CancellationToken.None));
        Assert.Contains("was declared failed", refused.Message);
        Assert.Contains("does not rejoin", refused.Message);
        c.Continue(1);
        var (report, results) = await run;
        AssertOthersIdentical(c, report, results, 1);
    }

    [Fact]
    public async Task AVanishedNodeIsDetectedAndItsChildrenResume()
    {
        await using var c = new Cluster(5, 2, tripFor: i => i == 0 ? (Length / 2, cl => cl.Net.TakeDown(cl.Addresses[0])) : null).Start();
        var (report, results) = await c.FinishAsync();
        AssertOthersIdentical(c, report, results, 0);
        Assert.Contains("no heartbeat", c.NodeNamed(report, 0).Message);
    }

    [Fact]
    public async Task AnOrphanReattachesToAParentThatIsItselfReattaching()
    {
        // Chain n0..n5: n1 and n3 die at the same moment; n2 goes to n0 while n4 goes to n2, which is resuming too.
        await using var c = new Cluster(6, 1, tripFor: i => i == 3 ? (Length / 2, cl => { cl.Crash(1); cl.Crash(3); }) : null).Start();
        var (report, results) = await c.FinishAsync();
        AssertOthersIdentical(c, report, results, 1, 3);
        Assert.NotEmpty(c.NodeNamed(report, 4).Repairs);
        Assert.NotEmpty(c.NodeNamed(report, 2).Repairs);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AnOffsetNoAncestorHoldsAnyMoreIsServedFromTheSpoolOrFailsThatSubtreeWithTheReason(bool spool)
    {
        // Chain n0 -> n1 -> n2, no retention on the relays, a server ring of 256 KiB (4 frames). n1's sink takes
        // nothing: its ring fills at offset X, then n0's (1 MiB), then the server's. Once n0 has received more than
        // the server's whole ring past X, the server's ring cannot hold X, nor can n0; then n0 dies.
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var c = new Cluster(3, 1, buffer: 256 << 10, retain: 0, noSpool: !spool, gateFor: i => i == 1 ? gate.Task : null).Start();
        await Eventually.HoldsAsync(() => c.OffsetSeen(1) > 0 && c.OffsetSeen(0) > c.OffsetSeen(1) + (512L << 10),
            "n0 more than the server's ring ahead of the stalled n1");
        long x = c.OffsetSeen(1);
        c.Crash(0);
        gate.SetResult();
        var (report, results) = await c.FinishAsync();
        if (spool)
        {
            AssertOthersIdentical(c, report, results, 0);
            var repair = c.NodeNamed(report, 1).Repairs.Single();
            Assert.Equal(0, repair.NewParentId);
            Assert.True(repair.Offset >= x, $"resumed at {repair.Offset}, was at {x}");
            Assert.Contains("from the spool", c.Log.ToString());
        }
        else
        {
            // n1 cannot resume anywhere: it fails saying so, and so does its child, which had less.
            AssertOthersIdentical(c, report, results, 0, 1, 2);
            Assert.Contains("cannot resume at offset", c.NodeNamed(report, 1).Message);
            Assert.Contains("no longer held", c.NodeNamed(report, 1).Message);
            Assert.Contains("cannot resume at offset", c.NodeNamed(report, 2).Message);
            Assert.False(results[1]?.Verified ?? false);
        }
    }

    // Under load a relay can be declared failed while its children are still making their first link to it, or one
    // first link breaks on its own: either way the child asks the server (ResumeFailed) and is re-attached, instead of
    // failing its whole subtree on the spot as it did when only a link that had been up could be repaired.
    [Fact]
    public async Task AFirstLinkThatBreaksIsRepairedLikeALostOne()
    {
        int broken = 0;
        await using var c = new Cluster(4, 1);
        c.Net.LinkOpened += link =>
        {
            if (link.Opener.Address.Equals(c.Addresses[2]) && link.Acceptor.Address.Equals(c.Addresses[1]) && Interlocked.Exchange(ref broken, 1) == 0)
                link.Reset();
        };
        c.Start();
        var (report, results) = await c.FinishAsync();
        Assert.Equal(1, Volatile.Read(ref broken));
        AssertOthersIdentical(c, report, results);
        Assert.Contains("cannot link at offset 0", c.Log.ToString());
    }

    [Fact]
    public async Task AChildReattachesToANewParentWhileThatParentIsStillReattaching()
    {
        // Chain n0..n5; n1 and n3 die together. n2 re-links to n0 and n4 to n2. n2's new link is held (stalled) until
        // n4 has been accepted by n2, so n4 surely attaches to a parent that has no upstream yet.
        var n4Accepted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        MemoryLink? held = null;
        Cluster? cluster = null;
        int crashed = 0;
        // The held link must not time out while the test waits for n4 (15 s, not 3: the wait is longer on a loaded machine).
        // Every node stays until released: n0, left with no child but the held n2, would otherwise finish and leave, and
        // n2 would rightly follow the server's next word (to the server) instead of waiting on its held link.
        await using var c = cluster = new Cluster(6, 1, failureSeconds: 15, waitRelease: true, tripFor: i => i == 3 ? (Length / 2, cl =>
        {
            cl.Net.LinkOpened += link =>
            {
                // The first link n2 opens to n0's address after the crash is its re-attach: hold it.
                if (Volatile.Read(ref crashed) == 1 && link.Opener.Address.Equals(cl.Addresses[2]) && link.Acceptor.Address.Equals(cl.Addresses[0])
                    && Interlocked.CompareExchange(ref held, link, null) is null)
                    link.Stall();
            };
            Volatile.Write(ref crashed, 1);
            cl.Crash(1);
            cl.Crash(3);
        }) : null).Start();
        await Eventually.HoldsAsync(() => held is not null && c.Log.ToString().Contains($"node {c.Server.Nodes.Single(n => n.Report.Name == "n4").Id} resumes at offset"),
            "n4 accepted by n2 while n2's own re-attach is held");
        Assert.DoesNotContain($"client {c.Server.Nodes.Single(n => n.Report.Name == "n2").Id}: linked to", c.Log.ToString().Split("re-attaching to node")[^1]);
        held!.Resume();
        var (report, results) = await c.FinishAsync();
        AssertOthersIdentical(c, report, results, 1, 3);
        Assert.Equal(c.NodeNamed(report, 2).Id, c.NodeNamed(report, 4).Repairs.Single().NewParentId);
        Assert.Equal(c.NodeNamed(report, 0).Id, c.NodeNamed(report, 2).Repairs.Single().NewParentId);
    }

    [Theory]
    [InlineData(2, 7)]
    [InlineData(2, 8)]
    [InlineData(3, 13)]
    public async Task InATreeTheOrphansOfAFailedNodeAreReattachedToItsParentByTheServer(int arity, int clients)
    {
        // The victim is a node whose parent is a node (not the server) and that has children: its orphans must go
        // to that parent, as the server says (Reattach). An orphan the server never told would fall back to the
        // server by itself (ResumeFailed after the failure timeout): its new parent would then be 0.
        int victim = -1;
        await using var c = new Cluster(clients, arity, tripFor: _ => (Length / 2, cl =>
        {
            if (Interlocked.CompareExchange(ref victim, -2, -1) != -1) return;
            var places = cl.Server.Snapshot().Nodes;
            var v = places.First(n => n.Place.Count(ch => ch == '.') == 1 && places.Any(k => k.Place.StartsWith(n.Place + ".", StringComparison.Ordinal)));
            int index = int.Parse(v.Name[1..], System.Globalization.CultureInfo.InvariantCulture);
            Volatile.Write(ref victim, index);
            cl.Crash(index);
        })).Start();
        var (report, results) = await c.FinishAsync();
        Assert.True(victim >= 0);
        AssertOthersIdentical(c, report, results, victim);
        var dead = c.NodeNamed(report, victim);
        Assert.NotEqual(0, dead.ParentId);
        var orphans = report.Nodes.Where(n => n.ParentId == dead.Id).ToArray();
        Assert.NotEmpty(orphans);
        // One orphan takes the dead node's place under its parent; its siblings go under it (arity allowing), so no
        // parent sends to more children than before the failure.
        var promoted = Assert.Single(orphans, o => o.Repairs.Single().NewParentId == dead.ParentId);
        Assert.All(orphans.Where(o => o != promoted), o => Assert.Equal(promoted.Id, o.Repairs.Single().NewParentId));
    }

    [Fact]
    public async Task TheServersDirectChildAndTheLastNodeCanDie()
    {
        await using var c = new Cluster(5, 1, tripFor: i => i == 0 ? (Length / 2, cl => { cl.Crash(0); cl.Crash(4); }) : null).Start();
        var (report, results) = await c.FinishAsync();
        AssertOthersIdentical(c, report, results, 0, 4);
        Assert.Equal(0, c.NodeNamed(report, 1).Repairs.Single().NewParentId);
    }

    [Fact]
    public async Task WhenEveryNodeIsGoneTheServerStopsReadingItsSource()
    {
        await using var c = new Cluster(2, 1, tripFor: i => i == 0 ? (Length / 4, cl => { cl.Crash(0); cl.Crash(1); }) : null).Start();
        var (report, _) = await c.FinishAsync();
        Assert.False(report.Success);
        Assert.Equal(2, report.Failed.Count);
        Assert.Contains("no node left to serve: stopping the source", c.Log.ToString());
        Assert.DoesNotContain("source done", c.Log.ToString());
    }

    [Fact]
    public async Task WhenTheServerDiesEveryClientFailsNamingIt()
    {
        await using var c = new Cluster(3, 1, tripFor: i => i == 2 ? (Length / 3, cl =>
        {
            foreach (var l in cl.Net.Links)
                if (l.Acceptor.Address.Equals(IPAddress.Loopback) || l.Opener.Address.Equals(IPAddress.Loopback)) l.Reset();
        }) : null).Start();
        var (_, results) = await c.FinishAsync();
        Assert.All(results, r => Assert.False(r?.Verified ?? false));
        Assert.Contains("server 127.0.0.1", c.Log.ToString());
        Assert.Contains("lost", c.Log.ToString());
    }
}
