using System.Globalization;
using KaDeploy.Payloads;
using KaDeploy.Payloads.Block;
using KaDeploy.Payloads.Parts;
using KaDeploy.Payloads.Tar;

namespace KaDeploy.Install;

/// <summary>What the server side of an install needs.</summary>
public sealed class InstallSourceOptions
{
    /// <summary>Root of the system to clone (default /). Its mounted file systems are captured and sent.</summary>
    public string SourceRoot { get; init; } = "/";
    /// <summary>A layout file to use instead of capturing the source's disk.</summary>
    public string? LayoutFile { get; init; }
    /// <summary>The node list (may be empty when every node is found... it may not: each node must be listed).</summary>
    public IReadOnlyList<NodeEntry> Nodes { get; init; } = [];
    /// <summary>Directory of hook executables shipped with the session (run chrooted on each node).</summary>
    public string? HooksDirectory { get; init; }
    /// <summary>Source partitions (numbers) to send block by block instead of as trees.</summary>
    public IReadOnlyCollection<int> RawPartitions { get; init; } = [];
    /// <summary>Session name (KA_SESSION on the nodes).</summary>
    public string Session { get; init; } = "default";
    /// <summary>Extra exclusions under the source (absolute paths or globs).</summary>
    public IReadOnlyList<string> Excludes { get; init; } = [];
    /// <summary>Non-fatal problems.</summary>
    public Action<string> Warn { get; init; } = _ => { };
    /// <summary>Each part's digest: the session's (--digest), so a part costs no more to check than the whole stream.</summary>
    public Protocol.DigestAlgorithm Digest { get; init; } = Protocol.DigestAlgorithm.Sha256;
    /// <summary>Part start and end events (progress lines).</summary>
    public Action<PartEvent>? OnPart { get; init; }
}

/// <summary>
/// Server side of a whole-node install: builds the manifest (layout, parts, node list) and the
/// <see cref="MultiPartSource"/> that sends it, then each file system's tree (one file system each, the other mount
/// points of the layout left out of it), raw partitions as block maps, and the hooks.
/// </summary>
public static class InstallSession
{
    /// <summary>Builds the source and its manifest.</summary>
    public static async Task<(MultiPartSource Source, InstallManifest Manifest)> BuildAsync(InstallSourceOptions o, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(o);
        string root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(o.SourceRoot));
        if (root.Length == 0) root = "/";
        if (!Directory.Exists(root)) throw new KaDeployException($"source {root} is not a directory");
        if (o.Nodes.Count == 0) throw new KaDeployException("an install needs the node list (--nodes FILE): each node's name and address come from it");
        DiskLayout layout = o.LayoutFile is not null
            ? LayoutFile.Load(o.LayoutFile)
            : await LayoutCapture.CaptureAsync(root, o.RawPartitions, o.Warn, ct).ConfigureAwait(false);
        if (o.LayoutFile is not null && o.RawPartitions.Count > 0) throw new KaDeployException("--raw-partition works with a captured layout, not with --layout");
        if (o.LayoutFile is not null) FillIdentitiesFromMounts(layout, root);

        var manifest = new InstallManifest
        {
            Session = o.Session,
            SourceHostname = File.Exists(Path.Combine(root, "etc/hostname")) ? File.ReadAllText(Path.Combine(root, "etc/hostname")).Trim() : "",
            Layout = layout,
            Nodes = [.. o.Nodes],
            BiosBoot = layout.Table == "dos" || layout.Partitions.Any(p => p.Role == PartitionRole.BiosGrub),
            UefiBoot = layout.Partitions.Any(p => p.Role == PartitionRole.Esp),
        };
        var parts = new List<PartSource>();
        int index = 1;
        var treeMounts = layout.Partitions.Where(p => p.MountPoint.Length > 0 && p.Role is PartitionRole.Linux or PartitionRole.Esp).Select(p => p.MountPoint).ToList();
        foreach (var p in layout.Partitions.OrderBy(p => p.MountPoint == "/" ? 0 : p.MountPoint.Count(c => c == '/')).ThenBy(p => p.Number))
        {
            if (p.Role == PartitionRole.Raw && o.RawPartitions.Contains(p.Number))
            {
                string dev = SourcePartitionDevice(root, p.Number);
                parts.Add(new PartSource(PartKind.BlockMap, $"partition {p.Number}", new BlockDeviceSource(dev)));
                manifest.Parts.Add(new ManifestPart { Index = index++, Kind = PartKind.BlockMap, Name = $"partition {p.Number}", Partition = p.Number });
                continue;
            }
            if (p.MountPoint.Length == 0 || p.Role is not (PartitionRole.Linux or PartitionRole.Esp)) continue;
            string dir = p.MountPoint == "/" ? root : root + p.MountPoint;
            if (!Directory.Exists(dir))
            {
                if (p.Role == PartitionRole.Esp) continue;   // the boot loader fills it
                throw new KaDeployException($"{p.MountPoint}: {dir} does not exist on the source");
            }
            if (p.Role == PartitionRole.Esp && !IsMountPoint(dir)) continue;   // an unmounted ESP: nothing to copy from
            // The other file systems of the layout below this one are their own parts: keep only their (empty) mount points.
            var excludes = treeMounts.Where(m => m != p.MountPoint && (p.MountPoint == "/" || m.StartsWith(p.MountPoint + "/", StringComparison.Ordinal)))
                .Select(m => (root == "/" ? "" : root) + m + "/*").ToList();
            excludes.AddRange(o.Excludes);
            var all = p.MountPoint == "/" ? TarTreeSource.DefaultExclusions(dir, excludes) : excludes;
            var tree = new TarTreeSource(new TarTreeSourceOptions { Root = dir, OneFileSystem = true, Excludes = all, Warn = o.Warn });
            parts.Add(new PartSource(PartKind.Tree, p.MountPoint, tree));
            manifest.Parts.Add(new ManifestPart { Index = index++, Kind = PartKind.Tree, Name = p.MountPoint, Partition = p.Number, MountPoint = p.MountPoint });
        }
        if (o.HooksDirectory is { } hooks)
        {
            if (!Directory.Exists(hooks)) throw new KaDeployException($"--hooks {hooks} is not a directory");
            parts.Add(new PartSource(PartKind.Tree, "hooks", new TarTreeSource(new TarTreeSourceOptions { Root = Path.GetFullPath(hooks), OneFileSystem = true, Warn = o.Warn })));
            manifest.Parts.Add(new ManifestPart { Index = index++, Kind = PartKind.Tree, Name = "hooks", Partition = 0 });
        }
        byte[] json = manifest.ToJson();
        parts.Insert(0, new PartSource(PartKind.Manifest, "manifest", new BufferSource(json, "install manifest")));
        // Each part is checked by a digest of its bytes as it ends: the frames digest covers the whole stream, not a part.
        return (new MultiPartSource(parts, o.OnPart, Protocol.DigestAlgorithms.ContentDigest(o.Digest)), manifest);
    }

    // A layout file names mount points, not devices: where the source has them mounted, their current UUIDs
    // are what its crypttab, resume and kernel command lines name, so they are rewritten too.
    private static void FillIdentitiesFromMounts(DiskLayout layout, string root)
    {
        var mounts = LayoutCapture.MountsUnder(root);
        foreach (var p in layout.Partitions)
        {
            var m = mounts.FirstOrDefault(x => x.MountPoint == p.MountPoint);
            if (m is null) continue;
            p.SourceUuid = ProbeUuid(m.Device);
        }
    }

    private static string ProbeUuid(string device)
    {
        string? name = DiskGuard.KernelName(device);
        if (name is null || !Directory.Exists("/dev/disk/by-uuid")) return "";
        foreach (var link in Directory.EnumerateFileSystemEntries("/dev/disk/by-uuid"))
            if (DiskGuard.KernelName(link) == name) return Path.GetFileName(link);
        return "";
    }

    private static bool IsMountPoint(string dir) =>
        LayoutCapture.MountsUnder("/").Any(m => m.MountPoint == Path.TrimEndingDirectorySeparator(dir));

    private static string SourcePartitionDevice(string root, int number)
    {
        var rootMount = LayoutCapture.MountsUnder(root).First(m => m.MountPoint == "/");
        string name = DiskGuard.KernelName(rootMount.Device)!;
        string disk = Path.GetFileName(Path.GetDirectoryName(DiskGuard.Resolve($"/sys/class/block/{name}"))!);
        return LayoutPlanner.PartitionDevice("/dev/" + disk, number);
    }

    /// <summary>One line per part event, for the server's log: "part 1/2 tree /: sending" (part 0 is the manifest,
    /// <paramref name="lastPart"/> the last part's index), numbered as the nodes' logs, the live view and the report number them.</summary>
    public static string Describe(PartEvent e, int lastPart)
    {
        ArgumentNullException.ThrowIfNull(e);
        string part = string.Create(CultureInfo.InvariantCulture, $"part {e.Header.Index}/{lastPart} {e.Header.Kind.ToString().ToLowerInvariant()} {e.Header.Name}");
        return e.Finished ? string.Create(CultureInfo.InvariantCulture, $"{part}: sent {e.Bytes / 1e6:0.0} MB in {e.Elapsed.TotalSeconds:0.0} s") : part + ": sending";
    }
}
