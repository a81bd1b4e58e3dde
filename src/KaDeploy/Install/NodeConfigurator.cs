using System.Text;
using System.Text.RegularExpressions;

namespace KaDeploy.Install;

/// <summary>
/// The file edits that turn a copy of the source into this node (the original's "autoconfiguration"): fstab, crypttab,
/// resume and kernel command lines point at the new UUIDs; host name, /etc/hosts, network configuration and
/// machine-id are the node's; the source's SSH host keys, persistent net rules, DHCP leases and random seed are
/// dropped. Pure file work on the staging root, so it is tested on a plain directory.
/// </summary>
public static partial class NodeConfigurator
{
    /// <summary>Applies every change under <paramref name="root"/>; returns one line per change (the log and the dry-run plan).</summary>
    public static List<string> Apply(string root, InstallManifest manifest, NodeEntry node, IReadOnlyList<PlannedPartition> planned,
        string machineId, Action<string> warn)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        ArgumentNullException.ThrowIfNull(node);
        ArgumentNullException.ThrowIfNull(planned);
        var changes = new List<string>();
        string P(string rel) => Path.Combine(root, rel.TrimStart('/'));

        // 1. New identities of the file systems, everywhere the source's are named.
        var map = new List<(string Old, string New)>();
        foreach (var pp in planned)
        {
            if (pp.Spec.SourceUuid.Length > 0 && pp.NewUuid.Length > 0) map.Add((pp.Spec.SourceUuid, pp.NewUuid));
            if (pp.Spec.SourcePartUuid.Length > 0 && manifest.Layout.Table == "gpt") map.Add((pp.Spec.SourcePartUuid, pp.NewPartUuid));
        }
        if (File.Exists(P("/etc/fstab")))
        {
            string before = File.ReadAllText(P("/etc/fstab"));
            string after = RewriteFstab(Replace(before, map), planned);
            if (after != before)
            {
                File.WriteAllText(P("/etc/fstab"), after);
                changes.Add("fstab: file systems named by their new UUIDs");
            }
        }
        else
        {
            File.WriteAllText(P("/etc/fstab"), RewriteFstab("", planned));
            changes.Add("fstab: written from the layout");
        }
        var others = new List<string> { "/etc/crypttab", "/etc/initramfs-tools/conf.d/resume", "/etc/default/grub", "/etc/kernel/cmdline" };
        if (Directory.Exists(P("/etc/default/grub.d"))) others.AddRange(Directory.EnumerateFiles(P("/etc/default/grub.d"), "*.cfg").Select(f => "/etc/default/grub.d/" + Path.GetFileName(f)));
        foreach (var rel in others)
        {
            if (!File.Exists(P(rel))) continue;
            string before = File.ReadAllText(P(rel));
            string after = Replace(before, map);
            if (after == before) continue;
            File.WriteAllText(P(rel), after);
            changes.Add(rel.Contains("resume", StringComparison.Ordinal) ? "resume: points at the new swap (initramfs rebuilt)" : $"{rel}: new UUIDs");
        }

        // 2. Identity.
        string oldName = File.Exists(P("/etc/hostname")) ? File.ReadAllText(P("/etc/hostname")).Trim() : manifest.SourceHostname;
        File.WriteAllText(P("/etc/hostname"), node.Name + "\n");
        changes.Add($"hostname: {node.Name}");
        File.WriteAllText(P("/etc/hosts"), RewriteHosts(File.Exists(P("/etc/hosts")) ? File.ReadAllText(P("/etc/hosts")) : "", oldName, node));
        changes.Add("hosts: 127.0.1.1" + (node.Address.Length > 0 ? $" and {node.Address.Split('/')[0]}" : "") + $" name {node.Name}");
        File.WriteAllText(P("/etc/machine-id"), machineId + "\n");
        string dbus = P("/var/lib/dbus/machine-id");
        if (File.Exists(dbus) && new FileInfo(dbus).LinkTarget is null) File.WriteAllText(dbus, machineId + "\n");
        changes.Add($"machine-id: {machineId}");

        // 3. Network: systemd-networkd if the clone has it, ifupdown for a named interface (iface=).
        if (Directory.Exists(P("/etc/systemd/network")))
        {
            File.WriteAllText(P("/etc/systemd/network/10-ka-deploy.network"), NetworkdUnit(node));
            changes.Add($"network: systemd-networkd, {(node.Address.Length > 0 ? "static " + node.Address : "DHCP")}{(node.Mac.Length > 0 ? " on " + node.Mac : "")}");
        }
        if (node.Vars.TryGetValue("iface", out string? iface) && Directory.Exists(P("/etc/network/interfaces.d")))
        {
            File.WriteAllText(P("/etc/network/interfaces.d/ka-deploy"), IfupdownStanza(node, iface));
            changes.Add($"network: ifupdown {iface}");
        }

        // 4. What must never be shared between nodes.
        int keys = 0;
        if (Directory.Exists(P("/etc/ssh")))
        {
            foreach (var k in Directory.EnumerateFiles(P("/etc/ssh"), "ssh_host_*"))
            {
                File.Delete(k);
                keys++;
            }
        }
        if (keys > 0) changes.Add($"ssh: the source's {keys} host key files removed");
        foreach (var rel in (string[])["/etc/udev/rules.d/70-persistent-net.rules", "/var/lib/systemd/random-seed", "/var/lib/dbus/machine-id.old"])
        {
            if (File.Exists(P(rel)))
            {
                File.Delete(P(rel));
                changes.Add($"removed {rel}");
            }
        }
        foreach (var dir in (string[])["/var/lib/dhcp", "/var/lib/NetworkManager", "/var/lib/systemd/network"])
        {
            if (!Directory.Exists(P(dir))) continue;
            foreach (var f in Directory.EnumerateFiles(P(dir)).Where(f => f.Contains("lease", StringComparison.Ordinal)))
            {
                File.Delete(f);
                changes.Add($"removed DHCP lease {dir}/{Path.GetFileName(f)}");
            }
        }
        return changes;
    }

    /// <summary>Replaces each old identity by its new one (case-insensitive: vfat ids are upper case in some tools).</summary>
    internal static string Replace(string text, IEnumerable<(string Old, string New)> map)
    {
        foreach (var (o, n) in map) text = Regex.Replace(text, Regex.Escape(o), n, RegexOptions.IgnoreCase | RegexOptions.CultureInvariant);
        return text;
    }

    /// <summary>
    /// Each fstab line whose mount point the layout provides names that partition by its new UUID (so a layout file
    /// that splits or joins file systems still gets a correct fstab); swap lines take the layout's swaps in order;
    /// layout partitions with no line get one. Other lines (tmpfs, NFS, binds) are kept as they are.
    /// </summary>
    internal static string RewriteFstab(string fstab, IReadOnlyList<PlannedPartition> planned)
    {
        var byMount = planned.Where(p => p.Spec.MountPoint.Length > 0 && p.NewUuid.Length > 0).ToDictionary(p => p.Spec.MountPoint, StringComparer.Ordinal);
        var swaps = new Queue<PlannedPartition>(planned.Where(p => p.Spec.Role == PartitionRole.Swap));
        var covered = new HashSet<PlannedPartition>();
        var sb = new StringBuilder();
        foreach (var raw in fstab.Split('\n').SkipLastIf(fstab.EndsWith('\n')))
        {
            string line = raw;
            var f = raw.Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (f.Length >= 3 && !f[0].StartsWith('#'))
            {
                PlannedPartition? pp = null;
                if (f[2] == "swap")
                {
                    if (IsBlockName(f[0]) && swaps.Count > 0) pp = swaps.Dequeue();
                }
                else if (byMount.TryGetValue(f[1], out var m) && IsBlockName(f[0])) pp = m;
                if (pp is not null && covered.Add(pp))
                {
                    f[0] = "UUID=" + pp.NewUuid;
                    if (pp.Spec.Role != PartitionRole.Swap && f[2] != pp.Spec.FileSystem && f[2] != "auto") f[2] = pp.Spec.FileSystem;
                    line = string.Join(' ', f);
                }
            }
            sb.Append(line).Append('\n');
        }
        foreach (var pp in planned.Where(p => !covered.Contains(p) && p.NewUuid.Length > 0 && (p.Spec.MountPoint.Length > 0 || p.Spec.Role == PartitionRole.Swap)))
        {
            string opts = pp.Spec.MountOptions.Length > 0 ? pp.Spec.MountOptions : pp.Spec.Role == PartitionRole.Swap ? "sw" : pp.Spec.FileSystem == "vfat" ? "umask=0077" : "defaults";
            string mp = pp.Spec.Role == PartitionRole.Swap ? "none" : pp.Spec.MountPoint;
            int pass = pp.Spec.MountPoint == "/" ? 1 : pp.Spec.Role == PartitionRole.Swap ? 0 : 2;
            sb.Append($"UUID={pp.NewUuid} {mp} {pp.Spec.FileSystem} {opts} 0 {pass}\n");
        }
        return sb.ToString();
    }

    private static IEnumerable<string> SkipLastIf(this string[] a, bool skip) => skip ? a.Take(a.Length - 1) : a;

    private static bool IsBlockName(string spec) =>
        spec.StartsWith("UUID=", StringComparison.Ordinal) || spec.StartsWith("PARTUUID=", StringComparison.Ordinal)
        || spec.StartsWith("LABEL=", StringComparison.Ordinal) || spec.StartsWith("PARTLABEL=", StringComparison.Ordinal)
        || spec.StartsWith("/dev/", StringComparison.Ordinal);

    internal static string RewriteHosts(string hosts, string oldName, NodeEntry node)
    {
        var sb = new StringBuilder();
        foreach (var line in hosts.Split('\n'))
        {
            var f = line.Split('#')[0].Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (f.Length >= 2 && (f[0] == "127.0.1.1" || (oldName.Length > 0 && oldName != "localhost" && f.Skip(1).Any(n => n == oldName || n.StartsWith(oldName + ".", StringComparison.Ordinal)))))
                continue;
            if (line.Length > 0) sb.Append(line).Append('\n');
        }
        string head = $"127.0.1.1\t{node.Name}\n" + (node.Address.Length > 0 ? $"{node.Address.Split('/')[0]}\t{node.Name}\n" : "");
        // After the localhost lines, as Debian writes it.
        string rest = sb.ToString();
        int afterLocal = rest.IndexOf("localhost", StringComparison.Ordinal) is int i and >= 0 ? rest.IndexOf('\n', i) + 1 : 0;
        return rest[..afterLocal] + head + rest[afterLocal..];
    }

    internal static string NetworkdUnit(NodeEntry node)
    {
        var sb = new StringBuilder("# Written by ka-deploy for this node.\n[Match]\n");
        sb.Append(node.Mac.Length > 0 ? $"MACAddress={node.Mac}\n" : "Name=en* eth*\n");
        sb.Append("\n[Network]\n");
        if (node.Address.Length == 0) sb.Append("DHCP=yes\n");
        else
        {
            sb.Append("Address=").Append(node.Address).Append('\n');
            if (node.Gateway.Length > 0) sb.Append("Gateway=").Append(node.Gateway).Append('\n');
            foreach (var d in node.Dns) sb.Append("DNS=").Append(d).Append('\n');
        }
        return sb.ToString();
    }

    internal static string IfupdownStanza(NodeEntry node, string iface)
    {
        if (node.Address.Length == 0) return $"auto {iface}\niface {iface} inet dhcp\n";
        var sb = new StringBuilder($"auto {iface}\niface {iface} inet{(node.Address.Contains(':') ? "6" : "")} static\n    address {node.Address}\n");
        if (node.Gateway.Length > 0) sb.Append("    gateway ").Append(node.Gateway).Append('\n');
        if (node.Dns.Count > 0) sb.Append("    dns-nameservers ").Append(string.Join(' ', node.Dns)).Append('\n');
        return sb.ToString();
    }
}
