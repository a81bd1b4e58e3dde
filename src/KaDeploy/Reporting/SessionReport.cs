using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace KaDeploy.Reporting;

/// <summary>Where a node ended up.</summary>
public enum NodeState { Registered, Planned, Linked, Receiving, Verified, Failed }

/// <summary>One row of the summary: a node's outcome as the server saw it.</summary>
public sealed class NodeReport
{
    public int Id { get; set; }
    public string Name { get; set; } = "";
    public string Address { get; set; } = "";
    public int ParentId { get; set; }
    public int Depth { get; set; }
    [JsonConverter(typeof(JsonStringEnumConverter<NodeState>))]
    public NodeState State { get; set; }
    public long WireBytes { get; set; }
    public long PayloadBytes { get; set; }
    public double Seconds { get; set; }
    public bool Verified { get; set; }
    public string Message { get; set; } = "";

    /// <summary>Payload megabytes (10^6) per second, as administrators read disk and link rates.</summary>
    public double MegabytesPerSecond => Seconds > 0 ? PayloadBytes / 1e6 / Seconds : 0;
}

/// <summary>The whole session, as written by --report.</summary>
public sealed class SessionReport
{
    public string Session { get; set; } = "";
    public string Source { get; set; } = "";
    public string Compression { get; set; } = "none";
    public int Arity { get; set; }
    public DateTimeOffset Started { get; set; }
    public double Seconds { get; set; }
    public long PayloadBytes { get; set; }
    public long WireBytes { get; set; }
    public string Sha256 { get; set; } = "";
    /// <summary>The end-to-end digest's algorithm (sha256, blake3, xxh128) and value, hex.</summary>
    public string DigestAlgorithm { get; set; } = "";
    public string Digest { get; set; } = "";
    public bool Success { get; set; }
    public string Message { get; set; } = "";
    public List<NodeReport> Nodes { get; set; } = [];

    /// <summary>Writes the report as indented JSON (source-generated, NativeAOT-safe).</summary>
    public void WriteJson(string path)
    {
        var json = JsonSerializer.Serialize(this, ReportJsonContext.Default.SessionReport);
        File.WriteAllText(path, json + "\n");
    }

    /// <summary>Reads a report back (tests, tooling).</summary>
    public static SessionReport ReadJson(string path) =>
        JsonSerializer.Deserialize(File.ReadAllText(path), ReportJsonContext.Default.SessionReport)
        ?? throw new KaDeployException($"{path}: empty report");

    /// <summary>The table the server prints at the end.</summary>
    public string FormatTable()
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        sb.Append(inv, $"{"node",-24} {"state",-9} {"bytes",14} {"MB/s",8} {"verified",-8} message\n");
        foreach (var n in Nodes.OrderBy(n => n.Depth).ThenBy(n => n.Id))
        {
            string name = $"{n.Id}:{(n.Name.Length > 0 ? n.Name : n.Address)}";
            if (name.Length > 24) name = name[..24];
            sb.Append(inv, $"{name,-24} {n.State,-9} {n.PayloadBytes,14} {n.MegabytesPerSecond,8:0.0} {(n.Verified ? "yes" : "NO"),-8} {n.Message}\n");
        }
        int ok = Nodes.Count(n => n.Verified);
        sb.Append(inv, $"{ok}/{Nodes.Count} nodes verified; {PayloadBytes} payload bytes ({WireBytes} on the wire) in {Seconds:0.00} s");
        if (Seconds > 0) sb.Append(inv, $", {PayloadBytes / 1e6 / Seconds:0.0} MB/s");
        sb.Append('\n');
        return sb.ToString();
    }
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(SessionReport))]
internal sealed partial class ReportJsonContext : JsonSerializerContext;
