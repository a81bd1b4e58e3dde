using System.Text.Json;

namespace KaDeploy.Tests.Cli;

/// <summary>--events json and --quiet, as a script or a dashboard would consume them.</summary>
public sealed class EventStreamTests
{
    [Fact]
    public async Task EventsJsonIsOneObjectPerLineOnStandardOutput()
    {
        var r = await CliRunner.RunAsync(CliRunner.AppHost, ["demo", "--clients", "2", "--events", "json"], TimeSpan.FromMinutes(2));
        Assert.True(r.Code == 0, r.Err);
        var events = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        // Every node's way to verified is there, in order, with its place; the last line is the verdict.
        foreach (var node in events.Where(e => e.GetProperty("event").GetString() == "node").GroupBy(e => e.GetProperty("node").GetInt32()))
        {
            var states = node.Select(e => e.GetProperty("state").GetString()).ToArray();
            Assert.Equal("verified", states[^1]);
            Assert.True(node.Last().TryGetProperty("place", out _), "the verdict names the node's place");
        }
        Assert.Equal(2, events.Where(e => e.GetProperty("event").GetString() == "node").Select(e => e.GetProperty("node").GetInt32()).Distinct().Count());
        var summary = events[^1];
        Assert.Equal("summary", summary.GetProperty("event").GetString());
        Assert.True(summary.GetProperty("success").GetBoolean());
        Assert.Contains("2/2 nodes verified", summary.GetProperty("message").GetString());
        Assert.Contains("demo: all 2 copies verified", r.Err); // the demo's own words went to standard error
    }

    [Fact]
    public async Task QuietLeavesOnlyTheSummary()
    {
        var r = await CliRunner.RunAsync(CliRunner.AppHost, ["demo", "--clients", "2", "--quiet"], TimeSpan.FromMinutes(2));
        Assert.True(r.Code == 0, r.Err);
        Assert.DoesNotContain("registered", r.Err);
        Assert.DoesNotContain("linked", r.Err);
        Assert.Contains("2/2 nodes verified", r.Out);
    }
}
