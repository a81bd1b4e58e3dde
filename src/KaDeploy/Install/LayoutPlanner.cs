using System.Globalization;
using System.Text;

namespace KaDeploy.Install;

/// <summary>A partition placed on a given disk, with the identities it will get.</summary>
public sealed record PlannedPartition(PartitionSpec Spec, long StartSector, long SizeSectors, string Device, string NewUuid, string NewPartUuid)
{
    /// <summary>Size in bytes.</summary>
    public long SizeBytes => SizeSectors * LayoutPlanner.SectorSize;
}

/// <summary>
/// Places a layout on a disk of a given size: 1 MiB alignment, fixed and percentage sizes, the one fill partition
/// takes the rest (so a larger disk grows it). A disk that cannot hold the layout is refused before any write.
/// </summary>
public static class LayoutPlanner
{
    /// <summary>Logical sector size assumed for the partition table (what sfdisk scripts count in).</summary>
    public const int SectorSize = 512;
    private const long Align = (1 << 20) / SectorSize;

    /// <summary>Plans <paramref name="layout"/> on <paramref name="disk"/> of <paramref name="diskBytes"/> bytes.</summary>
    public static IReadOnlyList<PlannedPartition> Plan(DiskLayout layout, string disk, long diskBytes, Func<string>? newUuid = null)
    {
        ArgumentNullException.ThrowIfNull(layout);
        newUuid ??= () => Guid.NewGuid().ToString();
        long total = diskBytes / SectorSize;
        // GPT keeps a backup header and table in the last 33 sectors; round the usable end down to the alignment.
        long end = (layout.Table == "gpt" ? total - 34 : total) / Align * Align;
        long first = Align;
        long usable = Math.Max(0, end - first);

        long Sectors(long bytes) => (bytes + (Align * SectorSize) - 1) / (Align * SectorSize) * Align;
        var sizes = new long[layout.Partitions.Count];
        long fixedSum = 0;
        int fillIndex = -1;
        for (int i = 0; i < sizes.Length; i++)
        {
            var p = layout.Partitions[i];
            if (p.Fill)
            {
                fillIndex = i;
                sizes[i] = Sectors(Math.Max(p.MinBytes, 1 << 20));
            }
            else if (p.Percent > 0) sizes[i] = Math.Max(Align, (long)(usable * p.Percent / 100) / Align * Align);
            else sizes[i] = Sectors(p.SizeBytes);
            fixedSum += sizes[i];
        }
        // Gaps from explicit starts count too: place once to find the end.
        long needed = PlaceAll(layout, sizes, first, out _);
        if (needed > end)
        {
            long needBytes = (needed + (layout.Table == "gpt" ? 34 : 0)) * SectorSize;
            throw new KaDeployException(
                $"disk {disk} is too small: {Mib(diskBytes)} MiB, the layout needs at least {(needBytes + (1 << 20) - 1) >> 20} MiB" +
                (fillIndex >= 0 ? $" (with {Mib(sizes[fillIndex] * SectorSize)} MiB for the fill partition {layout.Partitions[fillIndex].MountPoint})" : ""));
        }
        if (fillIndex >= 0) sizes[fillIndex] += end - needed;
        PlaceAll(layout, sizes, first, out var starts);
        var result = new List<PlannedPartition>();
        for (int i = 0; i < sizes.Length; i++)
        {
            var p = layout.Partitions[i];
            string uuid = p.FileSystem == "vfat" ? VfatId(newUuid()) : p.FileSystem.Length > 0 ? newUuid() : "";
            result.Add(new PlannedPartition(p, starts[i], sizes[i], PartitionDevice(disk, i + 1), uuid, newUuid()));
        }
        return result;
    }

    private static long PlaceAll(DiskLayout layout, long[] sizes, long first, out long[] starts)
    {
        starts = new long[sizes.Length];
        long at = first;
        for (int i = 0; i < sizes.Length; i++)
        {
            if (layout.Partitions[i].StartBytes is { } s)
            {
                long want = s / SectorSize;
                if (want < at) throw new KaDeployException($"{layout.Partitions[i].Origin}: partition {i + 1} would start at {Mib(s)} MiB, inside the partition before it");
                at = (want + Align - 1) / Align * Align;
            }
            starts[i] = at;
            at += sizes[i];
        }
        return at;
    }

    private static long Mib(long bytes) => bytes >> 20;

    /// <summary>/dev/sda → /dev/sda3; /dev/nvme0n1, /dev/loop0, /dev/mmcblk0 → ...p3 (the kernel's naming).</summary>
    public static string PartitionDevice(string disk, int number) =>
        char.IsDigit(disk[^1]) ? $"{disk}p{number}" : $"{disk}{number}";

    /// <summary>A vfat volume id (XXXX-XXXX) taken from a random UUID.</summary>
    private static string VfatId(string uuid) => uuid.Replace("-", "", StringComparison.Ordinal)[..8].ToUpperInvariant().Insert(4, "-");

    /// <summary>The partition type sfdisk is given: the spec's own code, else the role's default for the table.</summary>
    public static string TypeCode(PartitionSpec p, string table)
    {
        if (p.TypeCode.Length > 0) return p.TypeCode;
        bool gpt = table == "gpt";
        return p.Role switch
        {
            PartitionRole.Swap => gpt ? "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F" : "82",
            PartitionRole.Esp => gpt ? "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" : "ef",
            PartitionRole.BiosGrub => "21686148-6449-6E6F-744E-656564454649",
            _ => gpt ? "0FC63DAF-8483-4772-8E79-3D69D8477DE4" : "83",
        };
    }

    /// <summary>The sfdisk script that writes the table (sfdisk(8) "script" input).</summary>
    public static string SfdiskScript(DiskLayout layout, IReadOnlyList<PlannedPartition> planned, string diskId)
    {
        var sb = new StringBuilder();
        sb.Append("label: ").Append(layout.Table).Append('\n');
        sb.Append("label-id: ").Append(diskId).Append('\n');
        sb.Append("unit: sectors\n");
        foreach (var pp in planned)
        {
            var p = pp.Spec;
            sb.Append(CultureInfo.InvariantCulture, $"start={pp.StartSector}, size={pp.SizeSectors}, type={TypeCode(p, layout.Table)}");
            if (layout.Table == "gpt")
            {
                sb.Append(", uuid=").Append(pp.NewPartUuid);
                if (p.Name.Length > 0) sb.Append(", name=\"").Append(p.Name.Replace("\"", "", StringComparison.Ordinal)).Append('"');
            }
            else if (p.Bootable) sb.Append(", bootable");
            sb.Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>The mkfs command for a planned partition (new UUID, the source's label), or null when none is made.</summary>
    public static string[]? MkfsCommand(PlannedPartition pp)
    {
        var p = pp.Spec;
        var label = p.Label;
        string[] cmd = p.FileSystem switch
        {
            "ext4" or "ext3" or "ext2" => [$"mkfs.{p.FileSystem}", "-F", "-q", "-U", pp.NewUuid, .. Opt("-L", label), pp.Device],
            "xfs" => ["mkfs.xfs", "-f", "-q", "-m", $"uuid={pp.NewUuid}", .. Opt("-L", label), pp.Device],
            "btrfs" => ["mkfs.btrfs", "-f", "-q", "-U", pp.NewUuid, .. Opt("-L", label), pp.Device],
            "vfat" => ["mkfs.vfat", "-F", "32", "-i", pp.NewUuid.Replace("-", "", StringComparison.Ordinal), .. Opt("-n", label), pp.Device],
            "swap" => ["mkswap", "-U", pp.NewUuid, .. Opt("-L", label), pp.Device],
            _ => [],
        };
        return cmd.Length == 0 ? null : cmd;

        static string[] Opt(string flag, string value) => value.Length > 0 ? [flag, value] : [];
    }
}
