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
    /// <summary>Repairs this node went through: re-attached at an offset to a new parent, after so long.</summary>
    public List<RepairRecord> Repairs { get; set; } = [];
    /// <summary>Place in the chain or tree: "3" is the third node of a chain; "1.2" the second child of the server's first child.</summary>
    public string Place { get; set; } = "";
    /// <summary>Payload bytes this node had written over time (bounded: see <see cref="ProgressHistory"/>).</summary>
    public List<ProgressSample> Samples { get; set; } = [];
    /// <summary>In a whole-node install: how many of the session's parts this node verified (absent otherwise).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? PartsVerified { get; set; }

    /// <summary>Payload megabytes (10^6) per second, as administrators read disk and link rates.</summary>
    public double MegabytesPerSecond => Seconds > 0 ? PayloadBytes / 1e6 / Seconds : 0;
}

/// <summary>One failure a node survived: which peer was lost, where it resumed, from whom, and how long it took.</summary>
public sealed class RepairRecord
{
    /// <summary>What happened ("parent node 3 declared failed: no heartbeat for 3.0 s", "moved: slow sink").</summary>
    public string Reason { get; set; } = "";
    /// <summary>Wire offset the node resumed from.</summary>
    public long Offset { get; set; }
    /// <summary>New parent (0 = the server).</summary>
    public int NewParentId { get; set; }
    /// <summary>From the failure's detection to the new link being up.</summary>
    public double Seconds { get; set; }
    /// <summary>Seconds into the session when the failure was detected.</summary>
    public double At { get; set; }
}

/// <summary>A node that did not end with a verified copy, and why.</summary>
public sealed class FailedNode
{
    public int Id { get; set; }
    public string Name { get; set; } = "";
    public string Reason { get; set; } = "";
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
    /// <summary>The end-to-end digest's algorithm (frames, xxh128, sha256, blake3) and value, hex.</summary>
    public string DigestAlgorithm { get; set; } = "";
    public string Digest { get; set; } = "";
    public bool Success { get; set; }
    public string Message { get; set; } = "";
    public List<NodeReport> Nodes { get; set; } = [];
    /// <summary>Names of the nodes whose copy verified (as --ok-file writes them).</summary>
    public List<string> Succeeded { get; set; } = [];
    /// <summary>The nodes that failed, with the reason (names as --ko-file writes them).</summary>
    public List<FailedNode> Failed { get; set; } = [];

    /// <summary>Fills <see cref="Succeeded"/> and <see cref="Failed"/> from <see cref="Nodes"/>.</summary>
    public void ListOutcomes()
    {
        Succeeded = [.. Nodes.Where(n => n.Verified).OrderBy(n => n.Id).Select(n => NameOf(n))];
        Failed = [.. Nodes.Where(n => !n.Verified).OrderBy(n => n.Id).Select(n => new FailedNode { Id = n.Id, Name = NameOf(n), Reason = n.Message })];
    }

    private static string NameOf(NodeReport n) => n.Name.Length > 0 ? n.Name : n.Address;

    /// <summary>Writes one node name per line: the verified ones (ok) or the others (ko), for scripts.</summary>
    public static void WriteNames(string path, IEnumerable<string> names) =>
        File.WriteAllLines(path, names);
    /// <summary>What happened when: nodes failing, links repaired (the timeline marks them).</summary>
    public List<SessionEvent> Events { get; set; } = [];
    /// <summary>A whole-node install's parts, in stream order (absent for other sessions).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<PartReport>? Parts { get; set; }

    /// <summary>Writes the report as indented JSON (source-generated, NativeAOT-safe).</summary>
    public void WriteJson(string path)
    {
        var json = JsonSerializer.Serialize(this, ReportJsonContext.Relaxed.SessionReport);
        File.WriteAllText(path, json + "\n");
    }

    /// <summary>Reads a report back (tests, tooling).</summary>
    public static SessionReport ReadJson(string path) =>
        Parse(File.ReadAllText(path), path);

    /// <summary>Parses a report; a malformed one is a <see cref="KaDeployException"/> naming <paramref name="source"/>.</summary>
    public static SessionReport Parse(string json, string source)
    {
        try
        {
            return JsonSerializer.Deserialize(json, ReportJsonContext.Default.SessionReport)
                ?? throw new KaDeployException($"{source}: empty report");
        }
        catch (JsonException e)
        {
            throw new KaDeployException($"{source}: not a ka-deploy report ({e.Message})");
        }
    }

    /// <summary>The table the server prints at the end.</summary>
    public string FormatTable()
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        string placeTitle = Arity == 1 ? "chain" : "tree";
        sb.Append(inv, $"{placeTitle,-8} {"node",-22} {"state",-9} {"bytes",14} {"MB/s",8} {"verified",-8} message\n");
        // Tree order (depth first, as the data flows), so a subtree reads as a block under its root.
        foreach (var n in Nodes.OrderBy(n => n.Place, PlaceComparer.Instance).ThenBy(n => n.Id))
        {
            string name = $"{n.Id}:{(n.Name.Length > 0 ? n.Name : n.Address)}";
            if (name.Length > 22) name = name[..22];
            string place = n.Place.Length > 0 ? n.Place : "-";
            sb.Append(inv, $"{place,-8} {name,-22} {n.State,-9} {n.PayloadBytes,14} {n.MegabytesPerSecond,8:0.0} {(n.Verified ? "yes" : "NO"),-8} {n.Message}\n");
            foreach (var r in n.Repairs)
                sb.Append(inv, $"{"",-8} {"",-22} repaired: {r.Reason}; resumed at offset {r.Offset} from {(r.NewParentId == 0 ? "the server" : $"node {r.NewParentId}")} after {r.Seconds:0.00} s\n");
        }
        if (Parts is { Count: > 0 } parts)
            foreach (var p in parts) sb.Append(p.Describe(parts.Count, Nodes.Count)).Append('\n');
        int ok = Nodes.Count(n => n.Verified);
        sb.Append(inv, $"{ok}/{Nodes.Count} nodes verified; {PayloadBytes} payload bytes ({WireBytes} on the wire) in {Seconds:0.00} s");
        if (Seconds > 0) sb.Append(inv, $", {PayloadBytes / 1e6 / Seconds:0.0} MB/s");
        sb.Append('\n');
        return sb.ToString();
    }
}

/// <summary>Orders places ("1", "1.2", "10") by their numbers, depth first.</summary>
public sealed class PlaceComparer : IComparer<string>
{
    /// <summary>The one instance.</summary>
    public static readonly PlaceComparer Instance = new();

    /// <inheritdoc/>
    public int Compare(string? x, string? y)
    {
        var a = (x ?? "").Split('.', StringSplitOptions.RemoveEmptyEntries);
        var b = (y ?? "").Split('.', StringSplitOptions.RemoveEmptyEntries);
        for (int i = 0; i < Math.Min(a.Length, b.Length); i++)
        {
            int c = int.TryParse(a[i], out int ai) && int.TryParse(b[i], out int bi) ? ai.CompareTo(bi) : string.CompareOrdinal(a[i], b[i]);
            if (c != 0) return c;
        }
        return a.Length.CompareTo(b.Length);
    }
}

/// <summary>One point of a node's progress: seconds since the session started, payload bytes written by then.</summary>
public sealed record ProgressSample(double Seconds, long Bytes);

/// <summary>Something that happened to a node during the session (failed, repaired, ...), for the timeline.</summary>
public sealed class SessionEvent
{
    /// <summary>Seconds since the session started.</summary>
    public double Seconds { get; set; }
    /// <summary>The node concerned (0 = the session).</summary>
    public int Node { get; set; }
    /// <summary>"failed", "verified", "repaired", ...: the timeline marks "failed" in red and "repaired" in blue.</summary>
    public string Kind { get; set; } = "";
    /// <summary>The one-line reason.</summary>
    public string Message { get; set; } = "";
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(SessionReport))]
internal sealed partial class ReportJsonContext : JsonSerializerContext
{
    // The default encoder escapes ' < > & + as \u0027 ...: safe for HTML, unreadable in a report an administrator
    // opens in a terminal. Relaxed escaping still escapes what JSON requires (quotes, backslashes, control characters).
    private static ReportJsonContext? _relaxed;

    /// <summary>The context that writes reports: indented, camelCase, and no HTML escaping.</summary>
    public static ReportJsonContext Relaxed => _relaxed ??= new ReportJsonContext(new JsonSerializerOptions(Default.Options)
    {
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    });
}
