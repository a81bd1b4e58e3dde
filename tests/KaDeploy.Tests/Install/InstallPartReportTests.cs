using System.Security.Cryptography;
using KaDeploy.Install;
using KaDeploy.Payloads.Parts;
using KaDeploy.Reporting;

namespace KaDeploy.Tests.Install;

/// <summary>The parts of a whole-node install in the report, the live view and the event stream.</summary>
public sealed class InstallPartReportTests
{
    private static readonly byte[] Root = RandomNumberGenerator.GetBytes(700_000);
    private static readonly byte[] Boot = RandomNumberGenerator.GetBytes(90_000);

    private static MultiPartSource Source() => new(
    [
        new PartSource(PartKind.Manifest, "manifest", new BufferSource("{}"u8.ToArray(), "m")),
        new PartSource(PartKind.Tree, "/", new BufferSource(Root, "root")),
        new PartSource(PartKind.Tree, "/boot", new BufferSource(Boot, "boot")),
    ]);

    private static async Task<(InstallPartLog Log, byte[] Container)> SendAsync()
    {
        var source = Source();
        var log = InstallPartLog.Follow(source);
        var ms = new MemoryStream();
        await source.WriteToAsync(ms, CancellationToken.None);
        return (log, ms.ToArray());
    }

    [Fact]
    public async Task Each_parts_end_is_where_a_node_has_just_checked_its_digest()
    {
        var (log, container) = await SendAsync();
        var parts = log.Snapshot();
        Assert.Equal(["manifest", "/", "/boot"], parts.Select(p => p.Name));
        Assert.All(parts, p => Assert.True(p.Sent));
        Assert.Equal([2L, Root.Length, Boot.Length], parts.Select(p => p.Bytes));
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Root)), parts[1].Digest);
        Assert.Equal("sha256", parts[1].DigestAlgorithm);
        // A node reads a part up to and including its digest, checks it, and only then reads the next record:
        // the bytes it has consumed at that moment must be the part's End, or the report's count is wrong.
        var input = new CountingStream(new MemoryStream(container));
        var reader = new PartsReader(input);
        int k = 0;
        while (await reader.NextPartAsync(CancellationToken.None) is { } part)
        {
            Assert.Equal(parts[k].Offset, part.Header.Index == 0 ? 0 : parts[k - 1].End);
            await part.Content.CopyToAsync(Stream.Null);
            Assert.Equal(parts[k].End, input.Consumed);
            k++;
        }
        Assert.Equal(3, k);
        Assert.Equal(container.Length, parts[^1].End + 1);   // then only the end marker
    }

    [Fact]
    public async Task The_report_lists_the_parts_and_what_each_node_verified()
    {
        var (log, container) = await SendAsync();
        var parts = log.Snapshot();
        var report = new SessionReport
        {
            Session = "lab", Success = false, PayloadBytes = container.Length,
            Nodes =
            [
                new NodeReport { Id = 1, Name = "node1", State = NodeState.Verified, Verified = true, PayloadBytes = container.Length },
                // Stopped by /boot's digest: it read that digest (End) but nothing after it.
                new NodeReport { Id = 2, Name = "node2", State = NodeState.Failed, PayloadBytes = parts[2].End, Message = "part 2 (Tree '/boot'): SHA-256 mismatch" },
                // A hook failed after every part was in.
                new NodeReport { Id = 3, Name = "node3", State = NodeState.Failed, PayloadBytes = container.Length, Message = "hooks: exit 1" },
                new NodeReport { Id = 4, Name = "node4", State = NodeState.Failed, PayloadBytes = 0, Message = "disk too small" },
            ],
        };
        PartReport.AddTo(report, parts);
        Assert.Equal([3, 2, 3, 0], report.Nodes.Select(n => n.PartsVerified ?? -1));
        Assert.Equal([3, 3, 2], report.Parts!.Select(p => p.VerifiedNodes));

        string path = Path.Combine(Path.GetTempPath(), $"kd-parts-{Environment.ProcessId}-{Guid.NewGuid():N}.json");
        try
        {
            report.WriteJson(path);
            string json = File.ReadAllText(path);
            Assert.Contains("\"parts\":", json);
            Assert.Contains("\"partsVerified\": 2", json);
            Assert.Contains(parts[1].Digest, json);
            var back = SessionReport.ReadJson(path);
            Assert.Equal(["manifest", "/", "/boot"], back.Parts!.Select(p => p.Name));
            Assert.Equal(Boot.Length, back.Parts![2].Bytes);
        }
        finally
        {
            File.Delete(path);
        }
        string table = report.FormatTable();
        Assert.Contains("part 2/2 tree /boot: 0.1 MB sent in", table);
        Assert.Contains("verified on 2/4 nodes", table);
    }

    [Fact]
    public void The_servers_log_numbers_parts_as_the_report_does()
    {
        // The report's table says "part 2/2 tree /boot" (part 0 is the manifest); the server's log line must name the same part.
        var sending = new PartEvent(new PartHeader(2, PartKind.Tree, "/boot"), false, 0, TimeSpan.Zero);
        var sent = new PartEvent(new PartHeader(2, PartKind.Tree, "/boot"), true, 56_600_000, TimeSpan.FromSeconds(1.5));
        Assert.Equal("part 2/2 tree /boot: sending", InstallSession.Describe(sending, 2));
        Assert.Equal("part 2/2 tree /boot: sent 56.6 MB in 1.5 s", InstallSession.Describe(sent, 2));
    }

    [Fact]
    public void A_session_without_parts_writes_no_parts_in_its_report()
    {
        var report = new SessionReport { Session = "lab", Nodes = [new NodeReport { Id = 1, Verified = true }] };
        string json = System.Text.Json.JsonSerializer.Serialize(report, ReportJsonContext.Default.SessionReport);
        Assert.DoesNotContain("parts", json, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void The_live_view_says_which_part_is_sent_and_which_part_each_node_is_in()
    {
        var parts = new InstallPartLog(
        [
            new PartSource(PartKind.Manifest, "manifest", new BufferSource(new byte[1], "m")),
            new PartSource(PartKind.Tree, "/", new BufferSource(new byte[1], "r")),
            new PartSource(PartKind.Tree, "/boot", new BufferSource(new byte[1], "b")),
        ]);
        var h = (int i, string n, PartKind k) => new PartHeader(i, k, n);
        parts.Record(new PartEvent(h(0, "manifest", PartKind.Manifest), false, 0, TimeSpan.Zero, 0));
        parts.Record(new PartEvent(h(0, "manifest", PartKind.Manifest), true, 100, TimeSpan.Zero, 0, 150, new byte[32]));
        parts.Record(new PartEvent(h(1, "/", PartKind.Tree), false, 0, TimeSpan.Zero, 150));
        parts.Record(new PartEvent(h(1, "/", PartKind.Tree), true, 5000, TimeSpan.FromSeconds(2), 150, 5200, new byte[32]));
        parts.Record(new PartEvent(h(2, "/boot", PartKind.Tree), false, 0, TimeSpan.Zero, 5200));
        var s = new SessionSnapshot("lab", "streaming", 3, 2, 1, 6000, 9000,
        [
            new NodeSnapshot(1, "node1", "a", "1", NodeState.Receiving, 5500, ""),
            new NodeSnapshot(2, "node2", "b", "2", NodeState.Receiving, 3000, ""),
        ]) { Parts = parts.Snapshot() };
        var view = new LiveView(color: false);
        view.Update(s);
        var lines = view.Render(s, 160, 20);
        Assert.Contains("sending part 2/2 /boot", lines[1]);
        Assert.Contains(lines, l => l.Contains("1:node1", StringComparison.Ordinal) && l.Contains("part 2/2 /boot", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.Contains("2:node2", StringComparison.Ordinal) && l.Contains("part 1/2 /", StringComparison.Ordinal));
        string line = view.RenderLine(s);
        Assert.Contains("sending part 2/2 /boot", line);
        Assert.Contains("slowest node2 (place 2) at", line);
        Assert.Contains("in part 1 /", line);

        var events = new StringWriter();
        var stream = new EventStream(events);
        stream.Update(s);
        stream.Update(s with { Seconds = 4 });
        var partEvents = events.ToString().Split('\n').Where(l => l.Contains("\"event\":\"part\"", StringComparison.Ordinal)).ToArray();
        Assert.Equal(2, partEvents.Length);   // manifest and /, each once; /boot is not sent yet
        Assert.Contains("\"part\":1", partEvents[1]);
        Assert.Contains("\"name\":\"/\"", partEvents[1]);
    }

    private sealed class CountingStream(Stream inner) : KaDeploy.IO.SequentialReadStream
    {
        public long Consumed { get; private set; }
        public override int Read(byte[] buffer, int offset, int count) => Count(inner.Read(buffer, offset, count));
        public override int Read(Span<byte> buffer) => Count(inner.Read(buffer));
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            Count(await inner.ReadAsync(buffer, cancellationToken));
        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
        private int Count(int n)
        {
            Consumed += n;
            return n;
        }
    }
}
