using System.Net;
using KaDeploy.Payloads;
using KaDeploy.Reporting;
using KaDeploy.Session;
using KaDeploy.Tests.TestSupport;
using KaDeploy.Transport;

namespace KaDeploy.Tests.Session;

/// <summary>
/// A slow node moved off a chain while its child lags far behind it (the keyed bench's failure, on the in-memory
/// transport): server -> n0 -> n1 (slow sink, 8 MiB buffer) -> n2 (its data link stalled at about 3 MiB). n1's child is
/// then some 6 MiB behind what n1 has received, further than n0's ring keeps behind n1: n0 no longer holds n2's offset.
/// A move must send n2 straight to a holder of its offset (the server's spool), or not happen at all when nobody holds
/// it: n2 is never lost for a move.
/// </summary>
public class SlowMoveSessionTests
{
    private const long Length = 12_000_000;

    /// <summary>A disk that takes 16 KiB every 100 ms (160 KB/s) until <see cref="Release"/>: slow, not hung.</summary>
    private sealed class SlowSink : IPayloadSink
    {
        private volatile bool _fast;
        public MemoryStream Data { get; } = new();
        public string Description => "memory (slow)";
        public void Release() => _fast = true;

        public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
        {
            var buffer = new byte[64 << 10];
            int n;
            while ((n = await input.ReadAsync(buffer.AsMemory(0, _fast ? buffer.Length : 16 << 10), cancellationToken)) > 0)
            {
                Data.Write(buffer, 0, n);
                // The pace of a slow disk, not a synchronisation: the test waits on the server's verdict, never on time.
                if (!_fast) await Task.Delay(100, cancellationToken);
            }
        }
    }

    /// <summary>Runs an action once, when it has taken <paramref name="at"/> bytes.</summary>
    private sealed class TripSink(long at, Action trip) : IPayloadSink
    {
        private int _tripped;
        public MemoryStream Data { get; } = new();
        public string Description => "memory (tripwire)";

        public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
        {
            var buffer = new byte[64 << 10];
            int n;
            while ((n = await input.ReadAsync(buffer, cancellationToken)) > 0)
            {
                Data.Write(buffer, 0, n);
                if (Data.Length >= at && Interlocked.Exchange(ref _tripped, 1) == 0) trip();
            }
        }
    }

    private sealed class Chain : IAsyncDisposable
    {
        public MemoryTransport Net { get; } = new() { WindowBytes = 128 * 1024 };
        public StringWriter Log { get; } = new LockedStringWriter();
        private readonly TextWriter _log;
        public IPAddress[] Addresses { get; } = [IPAddress.Parse("127.0.10.10"), IPAddress.Parse("127.0.10.11"), IPAddress.Parse("127.0.10.12")];
        public SlowSink Slow { get; } = new();
        public TripSink Lagging { get; }
        public MemorySink First { get; } = new();
        public DeployServer Server { get; }
        private readonly List<MemoryLink> _stalled = [];
        private readonly long _n0Retain;
        private readonly CancellationTokenSource _timeout = new(TimeSpan.FromMinutes(2));
        private Task<SessionReport>? _run;
        private Task<ClientResult>[] _clients = [];

        public Chain(long spoolBytes, long n0Retain)
        {
            _log = TextWriter.Synchronized(Log);
            _n0Retain = n0Retain;
            // n2's sink stalls its own data link from n1 once it has 3 MiB: n2 then stays there while n1 goes on.
            Lagging = new TripSink(3L << 20, () =>
            {
                foreach (var l in Net.Links)
                    if (l.Opener.Address.Equals(Addresses[2]) && l.Acceptor.Address.Equals(Addresses[1]))
                    {
                        lock (_stalled) _stalled.Add(l);
                        l.Stall();
                    }
            });
            Server = new DeployServer(new ServerOptions
            {
                Source = new GeneratedSource(Length, seed: 5), Clients = 3, Arity = 1, BufferBytes = 1L << 20, SpoolMemoryBytes = spoolBytes,
                Bind = IPAddress.Loopback, ControlPort = 0, Discovery = false, Session = "slowmove", Log = _log, Transport = Net,
                FailureTimeout = TimeSpan.FromSeconds(10), SlowNodeAfter = TimeSpan.FromSeconds(0.5),
            });
        }

        public Chain Start()
        {
            _run = Server.RunAsync(_timeout.Token);
            // n0: a 1 MiB ring and n0Retain behind it; n1: an 8 MiB ring (its child may lag that far behind what it has).
            (long Buffer, long Retain, IPayloadSink Sink)[] nodes = [(1L << 20, _n0Retain, First), (8L << 20, 0, Slow), (1L << 20, 0, Lagging)];
            _clients = [.. nodes.Select((n, i) => new DeployClient(new ClientOptions
            {
                Server = $"127.0.0.1:{Server.ControlPort}", Session = "slowmove", Bind = Addresses[i], BufferBytes = n.Buffer,
                RetainBytes = n.Retain, SinkFactory = _ => n.Sink, Log = _log, NodeName = $"n{i}", Transport = Net,
                FailureTimeout = TimeSpan.FromSeconds(10),
            }).RunAsync(_timeout.Token))];
            return this;
        }

        /// <summary>Lets the stalled link and the slow disk go, so the session ends soon.</summary>
        public void Release()
        {
            lock (_stalled) foreach (var l in _stalled) l.Resume();
            Slow.Release();
        }

        public async Task<(SessionReport Report, ClientResult?[] Results)> FinishAsync()
        {
            var report = await _run!;
            return (report, await ClientResults.CollectAsync(_clients));
        }

        public NodeReport Node(SessionReport r, int i) => r.Nodes.Single(n => n.Name == $"n{i}");

        public async ValueTask DisposeAsync()
        {
            await Server.DisposeAsync();
            _timeout.Dispose();
        }
    }

    private static void AssertAllVerified(Chain c, SessionReport report, ClientResult?[] results)
    {
        var expected = GeneratedSource.Expected(Length, 5, false);
        MemoryStream[] data = [c.First.Data, c.Slow.Data, c.Lagging.Data];
        for (int i = 0; i < 3; i++)
        {
            Assert.True(results[i]?.Verified, $"n{i}: {results[i]?.Message}\n{c.Log}");
            Assert.True(expected.AsSpan().SequenceEqual(data[i].ToArray()), $"n{i}: copy differs");
        }
        Assert.True(report.Success, report.Message + "\n" + c.Log);
    }

    // Waits until the server has judged n1 slow (moved or not), then lets the session finish.
    private static async Task<(SessionReport, ClientResult?[])> RunAsync(Chain c)
    {
        c.Start();
        await Eventually.HoldsAsync(() => c.Log.ToString().Contains("n1 is slow ("), "the server's verdict on the slow n1");
        c.Release();
        return await c.FinishAsync();
    }

    [Fact]
    public async Task ASlowNodeWhoseChildsOffsetNobodyHoldsAnyMoreIsNotMovedAndNobodyIsLost()
    {
        // The server's memory spool keeps 5 MiB: once n1 is moved, n2's offset (about 3 MiB) is held neither by n0
        // nor by the server. Moving n1 would lose n2; it stays, slow, and the log says why.
        await using var c = new Chain(spoolBytes: 5L << 20, n0Retain: 1L << 20);
        var (report, results) = await RunAsync(c);
        AssertAllVerified(c, report, results);
        Assert.Contains("not moved: the offset of a child of it is no longer held", c.Log.ToString());
        Assert.Empty(c.Node(report, 1).Repairs);
        Assert.Empty(c.Node(report, 2).Repairs);
    }

    [Fact]
    public async Task AnOrphanOfAMovedNodeGoesStraightToTheServerWhenItsGrandparentNoLongerHoldsItsOffset()
    {
        // The default memory spool (1 GiB) holds the whole stream: n1 is moved, and n2 goes to the server at once,
        // never to n0, whose ring has moved past n2's offset ("could not resume ... no longer held here").
        await using var c = new Chain(spoolBytes: 1L << 30, n0Retain: 1L << 20);
        var (report, results) = await RunAsync(c);
        AssertAllVerified(c, report, results);
        Assert.Contains("moving it off the tree", c.Log.ToString());
        Assert.DoesNotContain("could not resume", c.Log.ToString());
        Assert.DoesNotContain("no longer held", c.Log.ToString());
        Assert.Equal(0, c.Node(report, 2).Repairs.Single().NewParentId);
    }

    [Fact]
    public async Task AnOrphanOfAMovedNodeGoesToItsGrandparentWhenThatStillHoldsItsOffset()
    {
        // n0 keeps 16 MiB behind its slowest child: it holds n2's offset, and is nearer than the server.
        await using var c = new Chain(spoolBytes: 1L << 30, n0Retain: 16L << 20);
        var (report, results) = await RunAsync(c);
        AssertAllVerified(c, report, results);
        Assert.Contains("moving it off the tree", c.Log.ToString());
        Assert.DoesNotContain("could not resume", c.Log.ToString());
        Assert.Equal(c.Node(report, 0).Id, c.Node(report, 2).Repairs.Single().NewParentId);
    }
}
