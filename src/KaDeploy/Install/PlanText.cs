using System.Globalization;
using System.Text;

namespace KaDeploy.Install;

/// <summary>The human-readable plan of one node's install: what --dry-run prints, and what a real run logs first.</summary>
public static class PlanText
{
    /// <summary>The exact plan on a known disk (client side).</summary>
    public static string Describe(InstallManifest m, NodeEntry node, TargetDisk disk, IReadOnlyList<PlannedPartition> planned, string machineId, string staging)
    {
        ArgumentNullException.ThrowIfNull(m);
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        sb.Append(inv, $"node {node.Name} (#{node.Index}{(node.Mac.Length > 0 ? ", " + node.Mac : "")}): install {disk.Path} ({disk.SizeBytes >> 20} MiB), {m.Layout.Table} table\n");
        sb.Append("  partitions:\n");
        foreach (var pp in planned)
        {
            var p = pp.Spec;
            sb.Append(inv, $"    {pp.Device,-16} {pp.SizeBytes >> 20,8} MiB  start {pp.StartSector * LayoutPlanner.SectorSize >> 20,6} MiB  {RoleText(p),-9} {p.FileSystem,-5} {(p.MountPoint.Length > 0 ? p.MountPoint : "-"),-10} {(p.Label.Length > 0 ? "label " + p.Label : "")}{(p.Fill ? "  (fill)" : "")}\n");
        }
        sb.Append("  commands:\n");
        sb.Append(inv, $"    wipefs --all --quiet {disk.Path}\n    sfdisk --quiet --wipe always --wipe-partitions always {disk.Path} <<EOF\n");
        foreach (var line in LayoutPlanner.SfdiskScript(m.Layout, planned, m.Layout.Table == "gpt" ? "(new disk GUID)" : "(new disk id)").Split('\n', StringSplitOptions.RemoveEmptyEntries))
            sb.Append("      ").Append(line).Append('\n');
        sb.Append("    EOF\n");
        foreach (var pp in planned)
            if (LayoutPlanner.MkfsCommand(pp) is { } cmd) sb.Append("    ").Append(StepRunner.Quote(cmd)).Append('\n');
        AppendCommon(sb, m, node, planned.Select(p => (p.Spec, (string?)p.NewUuid)).ToList(), machineId, staging, disk.Path);
        return sb.ToString();
    }

    /// <summary>The plan as the server can state it without the node's disk: sizes as the layout gives them.</summary>
    public static string DescribeForServer(InstallManifest m, NodeEntry node)
    {
        ArgumentNullException.ThrowIfNull(m);
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"node {node.Name} (#{node.Index}{(node.Mac.Length > 0 ? ", " + node.Mac : "")}): {m.Layout.Table} table on the disk given to its client (--install DISK)\n");
        sb.Append("  partitions:\n");
        foreach (var p in m.Layout.Partitions)
        {
            string size = p.Fill ? $"fill (at least {Math.Max(p.MinBytes, 1 << 20) >> 20} MiB)" : p.Percent > 0 ? $"{p.Percent}% of the disk" : $"{p.SizeBytes >> 20} MiB";
            sb.Append(CultureInfo.InvariantCulture, $"    {p.Number,2} {size,-28} {RoleText(p),-9} {p.FileSystem,-5} {(p.MountPoint.Length > 0 ? p.MountPoint : "-"),-10} {(p.Label.Length > 0 ? "label " + p.Label : "")}\n");
        }
        sb.Append("  mkfs: new UUID per file system, the labels above (ext4: mkfs.ext4 -U, xfs: mkfs.xfs -m uuid=, btrfs: mkfs.btrfs -U, vfat: mkfs.vfat -i, swap: mkswap -U)\n");
        AppendCommon(sb, m, node, m.Layout.Partitions.Select(p => (p, (string?)null)).ToList(), "(new, random)", "(staging root)", "DISK");
        return sb.ToString();
    }

    private static void AppendCommon(StringBuilder sb, InstallManifest m, NodeEntry node, List<(PartitionSpec Spec, string? Uuid)> parts, string machineId, string staging, string disk)
    {
        sb.Append("  mounts (under ").Append(staging).Append("): ")
          .Append(string.Join(", ", parts.Where(p => p.Spec.MountPoint.Length > 0 && p.Spec.Role is PartitionRole.Linux or PartitionRole.Esp)
              .OrderBy(p => p.Spec.MountPoint == "/" ? 0 : p.Spec.MountPoint.Count(c => c == '/')).Select(p => p.Spec.MountPoint))).Append('\n');
        sb.Append("  parts:\n");
        foreach (var p in m.Parts)
            sb.Append(CultureInfo.InvariantCulture, $"    {p.Index} {p.Kind.ToString().ToLowerInvariant(),-8} {p.Name,-12} -> {(p.Partition == 0 ? "hooks, run then removed" : p.MountPoint.Length > 0 ? p.MountPoint : "partition " + p.Partition)}\n");
        sb.Append("  configuration:\n");
        foreach (var (spec, uuid) in parts.Where(p => p.Spec.FileSystem.Length > 0))
            sb.Append("    ").Append(spec.MountPoint.Length > 0 ? spec.MountPoint : spec.Role.ToString().ToLowerInvariant())
              .Append(": UUID ").Append(spec.SourceUuid.Length > 0 ? spec.SourceUuid : "(by mount point)").Append(" -> ").Append(uuid ?? "(new)").Append('\n');
        sb.Append("    fstab, crypttab, resume, /etc/default/grub: the UUIDs above\n");
        sb.Append("    hostname ").Append(node.Name).Append("; /etc/hosts 127.0.1.1").Append(node.Address.Length > 0 ? " and " + node.Address.Split('/')[0] : "").Append('\n');
        sb.Append("    network: ").Append(node.Address.Length > 0 ? "static " + node.Address + (node.Gateway.Length > 0 ? " via " + node.Gateway : "") : "DHCP").Append(node.Mac.Length > 0 ? " on " + node.Mac : "").Append('\n');
        sb.Append("    machine-id ").Append(machineId).Append("; new SSH host keys (ssh-keygen -A); persistent net rules, DHCP leases, random seed removed\n");
        sb.Append("  boot loader: ");
        var boot = new List<string>();
        if (m.BiosBoot) boot.Add($"grub-install --target=i386-pc {disk}");
        if (m.UefiBoot) boot.Add("grub-install --target=x86_64-efi --no-nvram (EFI/debian and --removable EFI/BOOT/BOOTX64.EFI)");
        boot.Add("update-grub");
        sb.Append(string.Join("; ", boot)).Append(" (in a chroot of the clone)\n");
        if (m.Parts.Any(p => p.Partition == 0))
            sb.Append("  hooks: each executable, in name order, chrooted, with KA_NODE_NAME=").Append(node.Name)
              .Append(" KA_NODE_ADDRESS=").Append(node.Address.Split('/')[0]).Append(" KA_NODE_INDEX=").Append(node.Index)
              .Append(" KA_SESSION=").Append(m.Session).Append(string.Concat(node.Vars.Select(v => $" {v.Key}={v.Value}"))).Append('\n');
        sb.Append("  then: sync, unmount, report success\n");
    }

    private static string RoleText(PartitionSpec p) => p.Role switch
    {
        PartitionRole.BiosGrub => "bios_grub",
        PartitionRole.Esp => "efi",
        _ => p.Role.ToString().ToLowerInvariant(),
    };
}
