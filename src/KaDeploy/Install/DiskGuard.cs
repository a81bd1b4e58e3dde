using KaDeploy.Platform;

namespace KaDeploy.Install;

/// <summary>A whole disk the installer may write, resolved to its kernel name.</summary>
/// <param name="Path">/dev path of the whole disk (symlinks such as /dev/disk/by-id/... resolved).</param>
/// <param name="Name">Kernel name (sda, nvme0n1, loop3).</param>
/// <param name="SizeBytes">Its size.</param>
public sealed record TargetDisk(string Path, string Name, long SizeBytes);

/// <summary>
/// Refuses a disk the installer must not write: not a block device, a partition rather than a whole disk,
/// a disk with a mounted file system or active swap on it or on one of its partitions, or one held by
/// device-mapper / RAID. Reads /proc/self/mountinfo, /proc/swaps and /sys; writes nothing.
/// </summary>
public static class DiskGuard
{
    /// <summary>Checks <paramref name="disk"/> and returns what it is; one-line <see cref="KaDeployException"/> otherwise.</summary>
    public static TargetDisk Check(string disk)
    {
        ArgumentException.ThrowIfNullOrEmpty(disk);
        string path = Resolve(disk);
        if (!Posix.TryLStat(path, out FileStatus st, out _)) throw new KaDeployException($"disk {disk} does not exist");
        if (st.Kind != FileKind.BlockDevice) throw new KaDeployException($"{disk} is not a block device");
        string sys = $"/sys/dev/block/{st.RdevMajor}:{st.RdevMinor}";
        if (File.Exists(System.IO.Path.Combine(sys, "partition")))
            throw new KaDeployException($"{disk} is a partition; --install takes a whole disk");
        string name = System.IO.Path.GetFileName(Resolve(sys));
        long size = long.Parse(File.ReadAllText(System.IO.Path.Combine(sys, "size")).Trim(), System.Globalization.CultureInfo.InvariantCulture) * 512;
        if (size == 0) throw new KaDeployException($"disk {disk} has no medium (size 0)");

        var mine = new HashSet<string>(StringComparer.Ordinal) { name };
        string sysDisk = $"/sys/class/block/{name}";
        foreach (var d in Directory.EnumerateDirectories(sysDisk))
            if (File.Exists(System.IO.Path.Combine(d, "partition"))) mine.Add(System.IO.Path.GetFileName(d));
        foreach (var part in mine)
        {
            string holders = $"/sys/class/block/{part}/holders";
            if (Directory.Exists(holders) && Directory.EnumerateFileSystemEntries(holders).FirstOrDefault() is { } h)
                throw new KaDeployException($"refusing to write {disk}: {part} is in use by {System.IO.Path.GetFileName(h)} (device-mapper, RAID or crypt)");
        }
        foreach (var (dev, where) in InUse())
        {
            if (mine.Contains(dev)) throw new KaDeployException($"refusing to write {disk}: /dev/{dev} is {where}");
        }
        return new TargetDisk(path, name, size);
    }

    /// <summary>Kernel names of block devices holding a mounted file system or active swap, with where.</summary>
    internal static IEnumerable<(string Device, string Where)> InUse()
    {
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            // id parent major:minor root mountpoint options ... - fstype source superoptions
            var f = line.Split(' ');
            int dash = Array.IndexOf(f, "-");
            if (dash < 0 || f.Length < dash + 3) continue;
            string mountPoint = Unescape(f[4]);
            var kernel = NameOfDevNumber(f[2]);
            if (kernel is not null) yield return (kernel, $"mounted on {mountPoint}");
            // btrfs reports an anonymous device number: the source path says which device it is.
            string source = Unescape(f[dash + 2]);
            if (source.StartsWith("/dev/", StringComparison.Ordinal) && KernelName(source) is { } byPath && byPath != kernel)
                yield return (byPath, $"mounted on {mountPoint}");
        }
        if (File.Exists("/proc/swaps"))
        {
            foreach (var line in File.ReadLines("/proc/swaps").Skip(1))
            {
                string dev = line.Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? "";
                if (dev.StartsWith("/dev/", StringComparison.Ordinal) && KernelName(dev) is { } k) yield return (k, "active swap");
            }
        }
    }

    private static string? NameOfDevNumber(string majorMinor)
    {
        string sys = $"/sys/dev/block/{majorMinor}";
        return Directory.Exists(sys) ? System.IO.Path.GetFileName(Resolve(sys)) : null;
    }

    /// <summary>The kernel name of a /dev block device path, or null.</summary>
    internal static string? KernelName(string devPath)
    {
        if (!Posix.TryLStat(Resolve(devPath), out FileStatus st, out _) || st.Kind != FileKind.BlockDevice) return null;
        return NameOfDevNumber($"{st.RdevMajor}:{st.RdevMinor}");
    }

    /// <summary>Follows symlinks to the final path.</summary>
    internal static string Resolve(string path)
    {
        try
        {
            var target = new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true);
            return target?.FullName ?? System.IO.Path.GetFullPath(path);
        }
        catch (IOException)
        {
            return System.IO.Path.GetFullPath(path);
        }
    }

    private static string Unescape(string s) => s.Replace("\\040", " ", StringComparison.Ordinal).Replace("\\011", "\t", StringComparison.Ordinal)
        .Replace("\\012", "\n", StringComparison.Ordinal).Replace("\\134", "\\", StringComparison.Ordinal);
}
