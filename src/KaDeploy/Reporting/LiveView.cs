using System.Globalization;
using System.Text;

namespace KaDeploy.Reporting;

/// <summary>One node as the server sees it right now.</summary>
public sealed record NodeSnapshot(int Id, string Name, string Address, string Place, NodeState State, long Bytes, string Message);

/// <summary>The whole session right now: what the live view, the event stream and the progress samples are made from.</summary>
public sealed record SessionSnapshot(
    string Session, string Phase, double Seconds, int Expected, int Arity, long SentBytes, long? TotalBytes, IReadOnlyList<NodeSnapshot> Nodes)
{
    /// <summary>A whole-node install's parts so far (the last one may still be being sent); null for other sessions.</summary>
    public IReadOnlyList<PartReport>? Parts { get; init; }
}

/// <summary>
/// Renders snapshots for the operator: on a terminal, a block of rows (an overall bar, then one row per node in
/// tree order with its place, state, bytes, rate and ETA, the slowest running node highlighted); elsewhere one
/// plain line. Keeps the previous snapshot to compute rates. Pure text: the caller decides where it goes.
/// </summary>
public sealed class LiveView
{
    private const string Reverse = "\u001b[7m";
    private const string Red = "\u001b[31m";
    private const string Green = "\u001b[32m";
    private const string Reset = "\u001b[0m";
    private readonly Dictionary<int, (double Seconds, long Bytes, double Rate)> _rates = [];
    private readonly bool _color;
    private double _lastSeconds = -1;
    private long _lastSent;
    private double _sentRate;

    /// <param name="color">Use ANSI attributes (reverse video for the slowest node, red for failures).</param>
    public LiveView(bool color) => _color = color;

    /// <summary>Feeds a snapshot: updates the per-node rates (smoothed over a few seconds).</summary>
    public void Update(SessionSnapshot s)
    {
        ArgumentNullException.ThrowIfNull(s);
        foreach (var n in s.Nodes)
        {
            if (_rates.TryGetValue(n.Id, out var prev) && s.Seconds > prev.Seconds)
            {
                double instant = (n.Bytes - prev.Bytes) / (s.Seconds - prev.Seconds);
                double rate = prev.Rate <= 0 ? instant : 0.7 * prev.Rate + 0.3 * instant;
                _rates[n.Id] = (s.Seconds, n.Bytes, n.State is NodeState.Receiving or NodeState.Linked ? rate : 0);
            }
            else _rates[n.Id] = (s.Seconds, n.Bytes, 0);
        }
        if (_lastSeconds >= 0 && s.Seconds > _lastSeconds)
        {
            double instant = (s.SentBytes - _lastSent) / (s.Seconds - _lastSeconds);
            _sentRate = _sentRate <= 0 ? instant : 0.7 * _sentRate + 0.3 * instant;
        }
        _lastSeconds = s.Seconds;
        _lastSent = s.SentBytes;
    }

    /// <summary>The running node furthest behind, if any is running.</summary>
    public static NodeSnapshot? Slowest(SessionSnapshot s)
    {
        ArgumentNullException.ThrowIfNull(s);
        NodeSnapshot? slowest = null;
        foreach (var n in s.Nodes)
            if (n.State is NodeState.Linked or NodeState.Receiving && (slowest is null || n.Bytes < slowest.Bytes)) slowest = n;
        return slowest;
    }

    private double RateOf(int id) => _rates.TryGetValue(id, out var r) ? r.Rate : 0;

    /// <summary>The terminal block: at most <paramref name="maxRows"/> lines, each at most <paramref name="width"/> columns.</summary>
    public IReadOnlyList<string> Render(SessionSnapshot s, int width, int maxRows)
    {
        ArgumentNullException.ThrowIfNull(s);
        width = Math.Max(width, 40);
        var inv = CultureInfo.InvariantCulture;
        var lines = new List<string>();
        int done = s.Nodes.Count(n => n.State is NodeState.Verified or NodeState.Failed);
        int failed = s.Nodes.Count(n => n.State == NodeState.Failed);
        // The overall bar follows the slowest node still running (the session ends when it does), else what was sent.
        long total = s.TotalBytes ?? 0;
        var slowest = Slowest(s);
        long behind = slowest?.Bytes ?? (s.Nodes.Count > 0 && done == s.Nodes.Count ? total : s.SentBytes);
        double fraction = total > 0 ? Math.Clamp((double)behind / total, 0, 1) : 0;
        string head = string.Create(inv, $"session '{s.Session}' {s.Phase} {Clock(s.Seconds)}  {s.Nodes.Count}/{s.Expected} nodes, {done} done{(failed > 0 ? $", {failed} FAILED" : "")}");
        lines.Add(Fit(head, width));
        int barWidth = Math.Clamp(width - 50, 10, 60);
        string bar = total > 0 ? Bar(fraction, barWidth) : new string('.', barWidth);
        string amount = total > 0
            ? string.Create(inv, $"{fraction * 100,5:0.0}%  sent {ProgressLine.Size(s.SentBytes)} of ~{ProgressLine.Size(total)}  {Rate(_sentRate)}")
            : string.Create(inv, $"sent {ProgressLine.Size(s.SentBytes)}  {Rate(_sentRate)}");
        if (Sending(s) is { } sending) amount += "  " + sending;
        lines.Add(Fit($"[{bar}] {amount}", width));
        string placeTitle = s.Arity == 1 ? "chain" : "tree";
        lines.Add(Fit(string.Create(inv, $"{placeTitle,-7} {"node",-20} {"state",-9} {"bytes",10} {"rate",11} {"ETA",8}  message"), width));

        var ordered = s.Nodes.OrderBy(n => n.Place.Length == 0 ? "~" : n.Place, PlaceComparer.Instance).ThenBy(n => n.Id).ToList();
        int room = Math.Max(1, maxRows - lines.Count);
        List<NodeSnapshot> shown = ordered;
        if (ordered.Count > room)
        {
            // Too many rows for the screen: show the nodes that need attention (failed, then slowest), in tree order.
            var pick = ordered.OrderBy(n => n.State == NodeState.Failed ? 0 : n.State == NodeState.Verified ? 2 : 1).ThenBy(n => n.Bytes)
                .Take(room - 1).ToHashSet();
            shown = ordered.Where(pick.Contains).ToList();
        }
        foreach (var n in shown)
        {
            double rate = RateOf(n.Id);
            string eta = n.State == NodeState.Verified ? "done" : n.State == NodeState.Failed ? "-" : total > 0 && rate > 0 ? Clock((total - n.Bytes) / rate) : "--:--";
            string name = n.Name.Length > 0 ? n.Name : n.Address;
            string message = n.Message.Length == 0 && n.State is NodeState.Receiving && s.Parts is { } parts && PartReport.At(parts, n.Bytes) is { } part
                ? $"part {part.Index}/{parts.Count - 1} {part.Name}" : n.Message;
            string row = string.Create(inv, $"{(n.Place.Length > 0 ? n.Place : "-"),-7} {Cut($"{n.Id}:{name}", 20),-20} {StateText(n.State),-9} {ProgressLine.Size(n.Bytes),10} {Rate(rate),11} {eta,8}  {(ReferenceEquals(n, slowest) ? "<- slowest " : "")}{message}");
            row = Fit(row, width);
            if (_color && ReferenceEquals(n, slowest) && s.Nodes.Count > 1) row = Reverse + row + Reset;
            else if (_color && n.State == NodeState.Failed) row = Red + row + Reset;
            else if (_color && n.State == NodeState.Verified) row = Green + row + Reset;
            lines.Add(row);
        }
        if (shown.Count < ordered.Count) lines.Add($"... and {ordered.Count - shown.Count} more node(s) not shown");
        return lines;
    }

    /// <summary>One line for a log that is not a terminal: overall progress and the slowest node.</summary>
    public string RenderLine(SessionSnapshot s)
    {
        ArgumentNullException.ThrowIfNull(s);
        var inv = CultureInfo.InvariantCulture;
        int done = s.Nodes.Count(n => n.State is NodeState.Verified or NodeState.Failed);
        int failed = s.Nodes.Count(n => n.State == NodeState.Failed);
        var sb = new StringBuilder();
        sb.Append(inv, $"{s.Phase} {Clock(s.Seconds)}: sent {ProgressLine.Size(s.SentBytes)}");
        if (s.TotalBytes is > 0) sb.Append(inv, $" of ~{ProgressLine.Size(s.TotalBytes.Value)}");
        sb.Append(inv, $" ({Rate(_sentRate)}); {done}/{s.Nodes.Count} done");
        if (failed > 0) sb.Append(inv, $", {failed} failed");
        if (Sending(s) is { } sending) sb.Append("; ").Append(sending);
        if (Slowest(s) is { } slow)
        {
            sb.Append(inv, $"; slowest {slow.Name} (place {slow.Place}) at {ProgressLine.Size(slow.Bytes)}");
            if (s.Parts is { } parts && PartReport.At(parts, slow.Bytes) is { } part) sb.Append(inv, $" in part {part.Index} {part.Name}");
        }
        return sb.ToString();
    }

    // "sending part 2/3 /boot" while the server is in a part; null for sessions without parts or once all are sent.
    private static string? Sending(SessionSnapshot s) =>
        s.Parts is { } parts && parts.FirstOrDefault(p => p.Started && !p.Sent) is { } p ? $"sending part {p.Index}/{parts.Count - 1} {p.Name}" : null;

    private static string StateText(NodeState state) => state switch
    {
        NodeState.Failed => "FAILED",
        _ => state.ToString().ToLowerInvariant(),
    };

    private static string Bar(double fraction, int width)
    {
        int full = (int)Math.Round(fraction * width);
        return new string('#', full) + new string('-', width - full);
    }

    /// <summary>Payload rate in MB/s (10^6), as the summary table has it.</summary>
    public static string Rate(double bytesPerSecond) => (bytesPerSecond / 1e6).ToString("0.0", CultureInfo.InvariantCulture) + " MB/s";

    /// <summary>Seconds as mm:ss (or h:mm:ss).</summary>
    public static string Clock(double seconds)
    {
        if (!double.IsFinite(seconds) || seconds < 0) return "--:--";
        var t = TimeSpan.FromSeconds(Math.Min(seconds, 359999));
        return t.TotalHours >= 1 ? t.ToString(@"h\:mm\:ss", CultureInfo.InvariantCulture) : t.ToString(@"mm\:ss", CultureInfo.InvariantCulture);
    }

    private static string Cut(string s, int width) => s.Length <= width ? s : s[..(width - 1)] + "~";

    private static string Fit(string s, int width) => s.Length <= width ? s : s[..width];
}
