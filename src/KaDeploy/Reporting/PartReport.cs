using System.Globalization;
using System.Text;

namespace KaDeploy.Reporting;

/// <summary>
/// One part of a whole-node install session (the manifest, a file system's tree, a raw partition, the hooks), as the
/// server sent it: the report lists them, the live view says which part is being sent and which one each node is in.
/// </summary>
public sealed class PartReport
{
    /// <summary>Place in the stream (0 = the manifest).</summary>
    public int Index { get; set; }
    /// <summary>manifest, tree, blockmap or raw.</summary>
    public string Kind { get; set; } = "";
    /// <summary>A mount point, "partition N", "hooks" or "manifest".</summary>
    public string Name { get; set; } = "";
    /// <summary>The part's own bytes (without its framing).</summary>
    public long Bytes { get; set; }
    /// <summary>Where the part's record starts in the payload.</summary>
    public long Offset { get; set; }
    /// <summary>Where the next record starts (the part's digest included); 0 while the part is being sent.</summary>
    public long End { get; set; }
    /// <summary>Seconds the server took to read and send it (0 while it is being sent).</summary>
    public double Seconds { get; set; }
    /// <summary>The part's digest (hex), which every node checks as the part ends; empty while it is being sent.</summary>
    public string Digest { get; set; } = "";
    /// <summary>Its algorithm: the session's content digest (sha256, blake3, xxh128; xxh128 when the session uses frames).</summary>
    public string DigestAlgorithm { get; set; } = "";
    /// <summary>How many nodes checked this part's digest and found it right.</summary>
    public int VerifiedNodes { get; set; }

    /// <summary>True once the server has started sending the part.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public bool Started { get; set; }

    /// <summary>True once the server has sent the whole part.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public bool Sent => End > 0;

    /// <summary>
    /// The parts a node has verified: all of them for a verified node; for any other, those it read past. A node reads
    /// the byte after a part's digest only once that digest matched (the installer stops at a mismatch), so a node that
    /// consumed more than a part's <see cref="End"/> has verified it.
    /// </summary>
    public static int VerifiedBy(IReadOnlyList<PartReport> parts, bool verified, long consumedBytes)
    {
        ArgumentNullException.ThrowIfNull(parts);
        if (verified) return parts.Count;
        int n = 0;
        foreach (var p in parts)
            if (p.Sent && consumedBytes > p.End) n++;
        return n;
    }

    /// <summary>The part a node that has consumed <paramref name="bytes"/> of the payload is in, or null.</summary>
    public static PartReport? At(IReadOnlyList<PartReport> parts, long bytes)
    {
        ArgumentNullException.ThrowIfNull(parts);
        PartReport? at = null;
        foreach (var p in parts)
            if (p.Started && p.Offset <= bytes) at = p;
        return at;
    }

    /// <summary>Puts the parts into the report: the list, each node's count of verified parts, each part's count of nodes.</summary>
    public static void AddTo(SessionReport report, IReadOnlyList<PartReport> parts)
    {
        ArgumentNullException.ThrowIfNull(report);
        ArgumentNullException.ThrowIfNull(parts);
        report.Parts = [.. parts];
        foreach (var p in parts) p.VerifiedNodes = 0;
        foreach (var n in report.Nodes)
        {
            n.PartsVerified = VerifiedBy(parts, n.Verified, n.PayloadBytes);
            for (int i = 0; i < n.PartsVerified; i++) parts[i].VerifiedNodes++;
        }
    }

    /// <summary>"part 2/2 tree /boot: 56.6 MB sent in 2.3 s, xxh128 1a2b3c4d5e6f7a8b..., verified on 4/4 nodes".</summary>
    public string Describe(int count, int nodes)
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"part {Index}/{count - 1} {Kind} {Name}: ");
        if (!Sent) return sb.Append("being sent").ToString();
        sb.Append(CultureInfo.InvariantCulture, $"{Bytes / 1e6:0.0} MB sent in {Seconds:0.0} s, {DigestAlgorithm} {(Digest.Length > 16 ? Digest[..16] + "..." : Digest)}, verified on {VerifiedNodes}/{nodes} nodes");
        return sb.ToString();
    }
}
