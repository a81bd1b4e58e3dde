using System.Xml.Linq;
using KaDeploy.Relay;
using KaDeploy.Reporting;

namespace KaDeploy.Tests.Reporting;

/// <summary>The live view, the progress samples, the timeline and the console surface, without sockets.</summary>
public sealed class OperatorViewTests
{
    private static SessionSnapshot Snapshot(double seconds, params (int Id, string Place, NodeState State, long Bytes)[] nodes) =>
        new("lab", "streaming", seconds, nodes.Length, 2, nodes.Length == 0 ? 0 : nodes.Max(n => n.Bytes), 1000,
            nodes.Select(n => new NodeSnapshot(n.Id, $"n{n.Id}", $"10.0.0.{n.Id}", n.Place, n.State, n.Bytes, n.State == NodeState.Failed ? "disk full" : "")).ToArray());

    [Fact]
    public void OneRowPerNodeInTreeOrderWithTheSlowestMarked()
    {
        var view = new LiveView(color: false);
        view.Update(Snapshot(0, (5, "1", NodeState.Receiving, 0), (2, "1.1", NodeState.Receiving, 0), (9, "2", NodeState.Receiving, 0), (1, "1.2", NodeState.Receiving, 0)));
        var s = Snapshot(1, (5, "1", NodeState.Receiving, 600), (2, "1.1", NodeState.Receiving, 300), (9, "2", NodeState.Receiving, 500), (1, "1.2", NodeState.Receiving, 550));
        view.Update(s);
        var lines = view.Render(s, 120, 40);
        var rows = lines.Skip(3).ToArray();
        Assert.Equal(4, rows.Length);
        Assert.Equal(["1", "1.1", "1.2", "2"], rows.Select(r => r.Split(' ')[0]));
        Assert.Single(rows, r => r.Contains("<- slowest", StringComparison.Ordinal));
        Assert.Contains("<- slowest", rows[1]); // node 2 at place 1.1 is furthest behind
        Assert.Contains("0.0 MB/s", rows[1]); // 300 B/s shows as 0.0 MB/s: the column is MB/s as in the summary
        Assert.Contains("30.0%", lines[1]); // the bar follows the slowest node
        Assert.Contains("tree", lines[2]);
    }

    [Fact]
    public void WhenEveryNodeIsDoneThereIsNoSlowestNode()
    {
        var view = new LiveView(color: true);
        var s = Snapshot(3, (1, "1", NodeState.Verified, 1000), (2, "2", NodeState.Failed, 400));
        view.Update(s);
        var text = string.Join('\n', view.Render(s, 120, 40));
        Assert.DoesNotContain("slowest", text);
        Assert.Contains("FAILED", text);
        Assert.Contains("\u001b[31m", text); // the failed row in red
        Assert.DoesNotContain("slowest", view.RenderLine(s));
    }

    [Fact]
    public void ManyNodesOnASmallScreenShowTheOnesThatNeedAttention()
    {
        var nodes = Enumerable.Range(1, 50).Select(i => (i, i.ToString(System.Globalization.CultureInfo.InvariantCulture), NodeState.Receiving, 500L + i)).ToArray();
        nodes[40] = (41, "41", NodeState.Failed, 10);
        var s = Snapshot(2, nodes);
        var lines = new LiveView(false).Render(s, 100, 10);
        Assert.True(lines.Count <= 10, string.Join('\n', lines));
        Assert.Contains(lines, l => l.StartsWith("41 ", StringComparison.Ordinal)); // the failed one
        Assert.Contains(lines, l => l.StartsWith("1 ", StringComparison.Ordinal) && l.Contains("slowest", StringComparison.Ordinal));
        Assert.Contains("more node(s) not shown", lines[^1]);
        Assert.All(lines, l => Assert.True(l.Length <= 100, l));
    }

    [Fact]
    public void ProgressSamplesStayBoundedAndSpanTheWholeRun()
    {
        var list = new List<ProgressSample>();
        var history = new ProgressHistory(list, interval: 0.25);
        for (int i = 0; i <= 400_000; i++) history.Add(i * 0.25, i * 1000L); // 27 hours at 4 samples a second
        Assert.True(list.Count <= ProgressHistory.MaxSamples, $"{list.Count} samples");
        Assert.True(list.Count >= ProgressHistory.MaxSamples / 2 - 1, $"{list.Count} samples");
        Assert.Equal(0, list[0].Seconds);
        Assert.True(list[^1].Seconds >= 400_000 * 0.25 * 0.98, $"last sample at {list[^1].Seconds}");
        var gaps = list.Zip(list.Skip(1), (a, b) => b.Seconds - a.Seconds).ToArray();
        Assert.True(gaps.Max() <= 4 * gaps.Min() + 1e-9, "samples evenly spread");
    }

    [Fact]
    public void TheTimelineIsSvgWithALinePerNodeAndTheFailureMarked()
    {
        var report = new SessionReport { Session = "o'lab", Arity = 1, Seconds = 10, PayloadBytes = 1000, Message = "1 of 2 node(s) failed" };
        var ok = new NodeReport { Id = 1, Name = "n1", Place = "1", State = NodeState.Verified, Verified = true, PayloadBytes = 1000 };
        var bad = new NodeReport { Id = 2, Name = "n2 <b>", Place = "2", State = NodeState.Failed, PayloadBytes = 400, Message = "disk full & gone" };
        for (int t = 0; t <= 10; t++) ok.Samples.Add(new ProgressSample(t, t * 100));
        for (int t = 0; t <= 4; t++) bad.Samples.Add(new ProgressSample(t, t * 100));
        report.Nodes = [ok, bad];
        report.Events.Add(new SessionEvent { Seconds = 4, Node = 2, Kind = "failed", Message = "disk full & gone" });
        report.Events.Add(new SessionEvent { Seconds = 6, Node = 1, Kind = "repaired", Message = "re-linked to the server" });
        var svg = XDocument.Parse(Timeline.ToSvg(report));
        XNamespace ns = "http://www.w3.org/2000/svg";
        var lines = svg.Descendants(ns + "polyline").ToArray();
        Assert.Equal(2, lines.Length);
        Assert.Equal(11, lines[0].Attribute("points")!.Value.Split(' ').Length);
        Assert.Equal(5, lines[1].Attribute("points")!.Value.Split(' ').Length);
        Assert.NotNull(lines[1].Attribute("stroke-dasharray")); // not verified
        var cross = svg.Descendants(ns + "g").Single(g => g.Attribute("stroke")?.Value == "#d00");
        Assert.Contains("disk full & gone", cross.Element(ns + "title")!.Value);
        Assert.Single(svg.Descendants(ns + "circle"));
        Assert.Contains(svg.Descendants(ns + "text"), t => t.Value.Contains("n2 <b>", StringComparison.Ordinal));
    }

    [Fact]
    public void ALogLineErasesTheStatusBlockFirstAndRedrawsItAfter()
    {
        var sink = new StringWriter();
        var surface = new ConsoleSurface(sink, terminal: true);
        surface.SetStatus(["row one", "row two"]);
        surface.WriteLine("ka-deploy server: source done");
        string text = sink.ToString();
        int log = text.IndexOf("ka-deploy server:", StringComparison.Ordinal);
        Assert.EndsWith("\r\u001b[2A\u001b[J", text[..log]); // up over both rows, cleared, then the log line
        Assert.EndsWith("row one\u001b[K\nrow two\u001b[K\n", text); // and the block again below it
        var plain = new StringWriter();
        var file = new ConsoleSurface(plain, terminal: false);
        file.SetStatus(["row"]);
        file.WriteLine("line");
        Assert.Equal("line\n", plain.ToString()); // not a terminal: no status block, no escape codes
    }

    [Fact]
    public void QuietKeepsWhatNeedsAttention()
    {
        var sink = new StringWriter();
        var surface = new ConsoleSurface(sink, terminal: false, filter: l => l.Contains("warning", StringComparison.Ordinal));
        surface.WriteLine("registered n1");
        surface.WriteLine("warning: x");
        surface.WriteLineAlways("verdict");
        Assert.Equal("warning: x\nverdict\n", sink.ToString());
    }

    [Fact]
    public void TheSummaryTableListsNodesInTreeOrderWithTheirPlaces()
    {
        var report = new SessionReport { Arity = 2 };
        foreach (var (id, place) in new[] { (7, "2"), (3, "1.2"), (9, "1"), (1, "1.1"), (4, "10") })
            report.Nodes.Add(new NodeReport { Id = id, Name = $"n{id}", Place = place });
        var rows = report.FormatTable().Split('\n').Skip(1).Take(5).Select(l => l.Split(' ')[0]).ToArray();
        Assert.Equal(["1", "1.1", "1.2", "2", "10"], rows);
    }

    [Fact]
    public async Task ALostUpstreamIsNamed()
    {
        using var ring = new RelayRing(1 << 20);
        var receiver = new FrameReceiver(new MemoryStream(new byte[10]), ring) { Peer = "parent node 3 (127.0.0.3:4000)" };
        var e = await Assert.ThrowsAnyAsync<Exception>(() => receiver.RunAsync(CancellationToken.None));
        Assert.Contains("parent node 3 (127.0.0.3:4000) closed the link", e.Message);
    }
}
