using System.Text.Json;
using System.Text.Json.Serialization;

namespace KaDeploy.Reporting;

/// <summary>One line of <c>--events json</c>.</summary>
public sealed class EventLine
{
    /// <summary>Wall-clock time (UTC).</summary>
    public DateTimeOffset Time { get; set; }
    /// <summary>Seconds since the session started.</summary>
    public double Seconds { get; set; }
    /// <summary>"node" (a node changed state), "part" (an install's part sent), "progress" (periodic), "summary" (the end).</summary>
    public string Event { get; set; } = "";
    /// <summary>Part index, for part events (0 = the manifest).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? Part { get; set; }
    /// <summary>Node id, for node events.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? Node { get; set; }
    /// <summary>Node name.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Name { get; set; }
    /// <summary>Place in the chain or tree.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Place { get; set; }
    /// <summary>The node's new state, lower case.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? State { get; set; }
    /// <summary>Payload bytes (a node's written bytes, or the server's sent bytes).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? Bytes { get; set; }
    /// <summary>Expected payload size, when known.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? Total { get; set; }
    /// <summary>Per-node bytes, for progress events: id to bytes.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public Dictionary<string, long>? Nodes { get; set; }
    /// <summary>A reason or the session's verdict.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Message { get; set; }
    /// <summary>Summary only: the session succeeded.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public bool? Success { get; set; }
}

/// <summary>
/// <c>--events json</c>: one JSON object per line for scripts and dashboards. A "node" event whenever a node's
/// state changes, a "progress" event at most once a second, a "summary" at the end. Fed with the same snapshots
/// as the live view.
/// </summary>
public sealed class EventStream
{
    private readonly TextWriter _out;
    private readonly Dictionary<int, NodeState> _states = [];
    private readonly HashSet<int> _sentParts = [];
    private double _lastProgress = double.NegativeInfinity;

    /// <param name="output">Standard output, usually.</param>
    public EventStream(TextWriter output) => _out = output ?? throw new ArgumentNullException(nameof(output));

    /// <summary>Writes the events this snapshot implies.</summary>
    public void Update(SessionSnapshot s)
    {
        ArgumentNullException.ThrowIfNull(s);
        var now = DateTimeOffset.UtcNow;
        foreach (var n in s.Nodes)
        {
            if (_states.TryGetValue(n.Id, out var was) && was == n.State) continue;
            _states[n.Id] = n.State;
            Write(new EventLine
            {
                Time = now, Seconds = Math.Round(s.Seconds, 3), Event = "node", Node = n.Id, Name = n.Name, Place = n.Place.Length > 0 ? n.Place : null,
                State = n.State.ToString().ToLowerInvariant(), Bytes = n.Bytes, Message = n.Message.Length > 0 ? n.Message : null,
            });
        }
        foreach (var p in s.Parts ?? [])
        {
            if (!p.Sent || !_sentParts.Add(p.Index)) continue;
            Write(new EventLine
            {
                Time = now, Seconds = Math.Round(s.Seconds, 3), Event = "part", Part = p.Index, Name = p.Name, State = "sent", Bytes = p.Bytes,
                Message = $"{p.Kind}, sent in {p.Seconds.ToString("0.0", System.Globalization.CultureInfo.InvariantCulture)} s, {p.DigestAlgorithm} {p.Digest}",
            });
        }
        if (s.Phase == "streaming" && s.Seconds - _lastProgress >= 1)
        {
            _lastProgress = s.Seconds;
            Write(new EventLine
            {
                Time = now, Seconds = Math.Round(s.Seconds, 3), Event = "progress", Bytes = s.SentBytes, Total = s.TotalBytes,
                Nodes = s.Nodes.ToDictionary(n => n.Id.ToString(System.Globalization.CultureInfo.InvariantCulture), n => n.Bytes),
            });
        }
    }

    /// <summary>The last line: the session's verdict.</summary>
    public void Summary(SessionReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        foreach (var n in report.Nodes)
            Update(new SessionSnapshot(report.Session, "done", report.Seconds, report.Nodes.Count, report.Arity, report.PayloadBytes, report.PayloadBytes,
                [new NodeSnapshot(n.Id, n.Name, n.Address, n.Place, n.State, n.PayloadBytes, n.Message)]));
        Write(new EventLine
        {
            Time = DateTimeOffset.UtcNow, Seconds = Math.Round(report.Seconds, 3), Event = "summary", Bytes = report.PayloadBytes,
            Success = report.Success, Message = report.Success ? $"{report.Nodes.Count(n => n.Verified)}/{report.Nodes.Count} nodes verified" : report.Message,
        });
    }

    private void Write(EventLine line)
    {
        string json = JsonSerializer.Serialize(line, EventJsonContext.Compact.EventLine);
        lock (_out)
        {
            _out.WriteLine(json);
            _out.Flush();
        }
    }
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(EventLine))]
internal sealed partial class EventJsonContext : JsonSerializerContext
{
    private static EventJsonContext? _compact;

    /// <summary>One line per object, no HTML escaping.</summary>
    public static EventJsonContext Compact => _compact ??= new EventJsonContext(new JsonSerializerOptions(Default.Options)
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    });
}
