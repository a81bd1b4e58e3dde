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
