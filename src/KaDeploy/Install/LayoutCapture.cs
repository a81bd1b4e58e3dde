using System.Globalization;
using System.Text.Json;

namespace KaDeploy.Install;

/// <summary>
/// Captures the layout of the machine to clone: the disk that holds the file systems mounted at and under a root
/// (/ by default), its partition table (sfdisk --json: GPT or MBR, types, sizes, names), each partition's file
/// system, UUID and label (blkid -p), mount points (/proc/self/mountinfo, then the source's fstab for what is not
/// mounted: swap, an ESP), and the used space of the last partition, which becomes the one that grows (fill).
/// </summary>
public static class LayoutCapture
{
    /// <summary>A mounted file system under the root.</summary>
    public sealed record Mount(string MountPoint, string Device, string FsType);

    /// <summary>Captures the layout under <paramref name="root"/>. <paramref name="rawPartitions"/> (numbers) are sent block by block.</summary>
    public static async Task<DiskLayout> CaptureAsync(string root, IReadOnlyCollection<int> rawPartitions, Action<string> warn, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(root);
        root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        if (root.Length == 0) root = "/";
        // The machine's own file systems: / and what its fstab mounts (not whatever else happens to be mounted).
        var fstabMounts = ReadFstab(Path.Combine(root, "etc/fstab")).Select(f => f.MountPoint).ToHashSet(StringComparer.Ordinal);
        var mounts = MountsUnder(root).Where(m => m.MountPoint == "/" || fstabMounts.Contains(m.MountPoint)).ToList();
        if (!mounts.Any(m => m.MountPoint == "/")) throw new KaDeployException($"{root} is not a mount point of a block device; give --layout");
        var disks = new Dictionary<string, List<Mount>>(StringComparer.Ordinal);
        foreach (var m in mounts)
        {
            string name = DiskGuard.KernelName(m.Device) ?? throw new KaDeployException($"{m.Device} ({m.MountPoint}) is not a block device");
            string part = $"/sys/class/block/{name}";
            if (!File.Exists(Path.Combine(part, "partition")))
                throw new KaDeployException($"{m.MountPoint} is on {m.Device}, not a disk partition (LVM, RAID or a whole-disk file system): give --layout");
            string disk = Path.GetFileName(Path.GetDirectoryName(DiskGuard.Resolve(part))!);
            if (!disks.TryGetValue(disk, out var list)) disks[disk] = list = [];
            list.Add(m);
        }
        if (disks.Count > 1)
            throw new KaDeployException($"the file systems under {root} are on {disks.Count} disks ({string.Join(", ", disks.Keys.Order())}); a node is installed on one disk: give --layout");
        string diskName = disks.Keys.Single();
        string diskPath = "/dev/" + diskName;
        string json = await StepRunner.RunAsync("capture layout", ["sfdisk", "--json", diskPath], ct).ConfigureAwait(false);
        var fstab = ReadFstab(Path.Combine(root, "etc/fstab"));
        var layout = Parse(json, diskPath);
        layout.SourceDiskBytes = long.Parse(File.ReadAllText($"/sys/class/block/{diskName}/size").Trim(), CultureInfo.InvariantCulture) * 512;
        foreach (var p in layout.Partitions)
        {
            string dev = LayoutPlanner.PartitionDevice(diskPath, p.Number);
            var id = await ProbeAsync(dev, ct).ConfigureAwait(false);
            p.SourceUuid = id.GetValueOrDefault("UUID", "");
            p.Label = id.GetValueOrDefault("LABEL", "");
            string fs = id.GetValueOrDefault("TYPE", "");
            var mounted = disks[diskName].FirstOrDefault(m => DiskGuard.KernelName(m.Device) == Path.GetFileName(dev));
            var inFstab = fstab.FirstOrDefault(f => (p.SourceUuid.Length > 0 && f.Spec.Equals("UUID=" + p.SourceUuid, StringComparison.OrdinalIgnoreCase))
                || (p.SourcePartUuid.Length > 0 && f.Spec.Equals("PARTUUID=" + p.SourcePartUuid, StringComparison.OrdinalIgnoreCase))
                || (p.Label.Length > 0 && f.Spec == "LABEL=" + p.Label) || f.Spec == dev);
            if (rawPartitions.Contains(p.Number))
            {
                if (mounted is not null) throw new KaDeployException($"partition {p.Number} ({dev}) is mounted on {mounted.MountPoint}: a raw copy of a mounted file system is not consistent; unmount it or leave out --raw-partition {p.Number}");
                p.Role = PartitionRole.Raw;
                p.FileSystem = "";
                p.MountPoint = "";
                continue;
            }
            if (p.Role == PartitionRole.BiosGrub) continue;
            if (fs == "swap")
            {
                p.Role = PartitionRole.Swap;
                p.FileSystem = "swap";
                continue;
            }
            if (p.Role == PartitionRole.Esp || fs == "vfat" && inFstab?.MountPoint == "/boot/efi")
            {
                p.Role = PartitionRole.Esp;
                p.FileSystem = "vfat";
                p.MountPoint = mounted?.MountPoint ?? inFstab?.MountPoint ?? "";
                if (mounted is null) warn($"the EFI system partition {dev} is not mounted: its files are not copied (the boot loader is installed fresh)");
                continue;
            }
            if (mounted is not null)
            {
                p.Role = PartitionRole.Linux;
                p.FileSystem = mounted.FsType;
                p.MountPoint = mounted.MountPoint;
                p.MountOptions = inFstab?.Options ?? "";
                if (p.FileSystem is not ("ext4" or "ext3" or "ext2" or "xfs" or "btrfs"))
                    throw new KaDeployException($"{p.MountPoint} is {p.FileSystem}; the installer makes ext4, xfs, btrfs, vfat and swap");
                continue;
            }
            warn($"partition {p.Number} ({dev}, {(fs.Length > 0 ? fs : "no file system")}) is neither mounted nor swap: it is created empty; --raw-partition {p.Number} copies it");
            p.Role = PartitionRole.Raw;
            p.FileSystem = "";
            p.MountPoint = "";
            p.Label = "";
        }
        // The last partition grows on a larger disk, and may shrink on a smaller one down to what its data needs.
        var last = layout.Partitions[^1];
        if (last.Role == PartitionRole.Linux && last.MountPoint.Length > 0)
        {
            last.Fill = true;
            last.MinBytes = UsedBytes(root, last.MountPoint) * 5 / 4 + (64L << 20);
        }
        LayoutValidator.Validate(layout);
        return layout;
    }

    /// <summary>The block-device mounts at and under <paramref name="root"/>, with mount points relative to it.</summary>
    public static List<Mount> MountsUnder(string root)
    {
        var result = new List<Mount>();
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var f = line.Split(' ');
            int dash = Array.IndexOf(f, "-");
            if (dash < 0 || f.Length < dash + 3) continue;
            string mp = f[4].Replace("\\040", " ", StringComparison.Ordinal);
            string source = f[dash + 2];
            if (!source.StartsWith("/dev/", StringComparison.Ordinal) || f[3] != "/") continue;  // bind mounts of subtrees are not file systems
            string? rel = root == "/" ? mp : mp == root ? "/" : mp.StartsWith(root + "/", StringComparison.Ordinal) ? mp[root.Length..] : null;
            if (rel is null) continue;
            result.RemoveAll(m => m.MountPoint == rel);   // the last mount on a path is the visible one
            result.Add(new Mount(rel, source, f[dash + 1]));
        }
        return result;
    }

    /// <summary>Parses `sfdisk --json` output into a layout (roles from the type codes; file systems are probed after).</summary>
    public static DiskLayout Parse(string sfdiskJson, string diskPath)
    {
        using var doc = JsonDocument.Parse(sfdiskJson);
        var t = doc.RootElement.GetProperty("partitiontable");
        string label = t.GetProperty("label").GetString() ?? "";
        if (label is not ("gpt" or "dos")) throw new KaDeployException($"{diskPath}: partition table '{label}' is not supported (gpt, dos)");
        var layout = new DiskLayout { Table = label };
        long sectorSize = t.TryGetProperty("sectorsize", out var ss) ? ss.GetInt64() : 512;
        if (!t.TryGetProperty("partitions", out var parts)) throw new KaDeployException($"{diskPath} has no partitions");
        foreach (var p in parts.EnumerateArray())
        {
            string node = p.GetProperty("node").GetString() ?? "";
            int number = int.Parse(new string(node.Reverse().TakeWhile(char.IsDigit).Reverse().ToArray()), CultureInfo.InvariantCulture);
            string type = p.GetProperty("type").GetString() ?? "";
            if (label == "dos" && type is "5" or "f" or "85") continue;   // the extended container: its logicals are listed themselves
            var spec = new PartitionSpec
            {
                Number = number,
                SizeBytes = p.GetProperty("size").GetInt64() * sectorSize,
                TypeCode = type,
                Name = p.TryGetProperty("name", out var n) ? n.GetString() ?? "" : "",
                SourcePartUuid = p.TryGetProperty("uuid", out var u) ? u.GetString() ?? "" : "",
                Bootable = p.TryGetProperty("bootable", out var b) && b.GetBoolean(),
                Origin = $"{diskPath} partition {number}",
                Role = type.ToUpperInvariant() switch
                {
                    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" or "EF" => PartitionRole.Esp,
                    "21686148-6449-6E6F-744E-656564454649" => PartitionRole.BiosGrub,
                    _ => PartitionRole.Linux,
                },
            };
            layout.Partitions.Add(spec);
        }
        if (label == "dos" && layout.Partitions.Any(p => p.Number > 4))
            throw new KaDeployException($"{diskPath} has logical partitions; the installer writes up to 4 primary ones on MBR (give --layout with table gpt)");
        // Renumber in disk order (the installer writes partitions 1..n in order).
        layout.Partitions = [.. layout.Partitions.OrderBy(p => p.Number)];
        return layout;
    }

    private static async Task<Dictionary<string, string>> ProbeAsync(string dev, CancellationToken ct)
    {
        var d = new Dictionary<string, string>(StringComparer.Ordinal);
        string output;
        try
        {
            output = await StepRunner.RunAsync("capture layout", ["blkid", "-p", "-o", "export", dev], ct).ConfigureAwait(false);
        }
        catch (InstallStepException)
        {
            return d;   // blkid exits 2 when it finds nothing: no file system
        }
        foreach (var line in output.Split('\n'))
        {
            int eq = line.IndexOf('=');
            if (eq > 0) d[line[..eq]] = line[(eq + 1)..];
        }
        return d;
    }

    private sealed record FstabLine(string Spec, string? MountPoint, string? Options);

    private static List<FstabLine> ReadFstab(string path)
    {
        if (!File.Exists(path)) return [];
        return File.ReadLines(path).Select(l => l.Split('#')[0].Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries))
            .Where(f => f.Length >= 4).Select(f => new FstabLine(f[0], f[1], f[3])).ToList();
    }

    private static long UsedBytes(string root, string mountPoint)
    {
        var info = new DriveInfo(mountPoint == "/" ? root : root + mountPoint);
        return info.TotalSize - info.TotalFreeSpace;
    }
}
