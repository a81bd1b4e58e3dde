using System.Globalization;

namespace KaDeploy.Netboot;

/// <summary>What a node's next network boot does.</summary>
public enum BootAction
{
    /// <summary>Boot the install image: the node installs itself, then reboots.</summary>
    Install,
    /// <summary>Boot from the local disk (the clone).</summary>
    Local,
}

/// <summary>One node's state as <c>ka-deploy netboot status</c> shows it.</summary>
public sealed record NodeStatus(string Name, string Mac, BootAction Action, DateTimeOffset Changed, string Note);

/// <summary>
/// The per-node switch between "install" and "boot from disk" (the original's ka_pxe_step), kept in the boot service's
/// state directory: <c>nodes/MAC.state</c> holds <c>install|local name unix-time note</c>, and
/// <c>tftp/nodes/MAC.ipxe</c> is the iPXE script the node's next network boot runs. Both are written by whoever
/// changes the state (the service when a node reports a verified install, or <c>netboot state</c>), atomically.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class NodeStateStore
{
    private readonly string _root;
    private readonly object _gate = new();

    /// <summary>Uses (and creates) <paramref name="stateDirectory"/>, readable by root only.</summary>
    public NodeStateStore(string stateDirectory)
    {
        _root = stateDirectory;
        // The boot scripts and boot-arguments hold ka.key= when the session is keyed. dnsmasq running as root serves only
        // world-readable files (tftp.c), so the files stay 0644 and the directory above them is what keeps local users out.
        Directory.CreateDirectory(_root);
        File.SetUnixFileMode(_root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        Directory.CreateDirectory(Path.Combine(_root, "nodes"));
        Directory.CreateDirectory(Path.Combine(_root, "tftp", "nodes"));
    }

    /// <summary>The TFTP root served by dnsmasq.</summary>
    public string TftpRoot => Path.Combine(_root, "tftp");

    /// <summary>Reads every node's state.</summary>
    public IReadOnlyList<NodeStatus> List()
    {
        var list = new List<NodeStatus>();
        foreach (var f in Directory.EnumerateFiles(Path.Combine(_root, "nodes"), "*.state").Order(StringComparer.Ordinal))
            if (Read(f) is { } s) list.Add(s);
        return list;
    }

    /// <summary>The state of one node, or null when it has none yet.</summary>
    public NodeStatus? Get(string mac) => Read(StatePath(mac));

    /// <summary>Sets a node's state and rewrites its boot script.</summary>
    public NodeStatus Set(NetbootNode node, BootAction action, string note, BootScripts scripts)
    {
        ArgumentNullException.ThrowIfNull(node);
        ArgumentNullException.ThrowIfNull(scripts);
        var status = new NodeStatus(node.Name, node.Mac, action, DateTimeOffset.UtcNow, note);
        lock (_gate)
        {
            WriteAtomically(Path.Combine(TftpRoot, "nodes", node.MacHyphens + ".ipxe"), scripts.For(node, action));
            WriteAtomically(StatePath(node.Mac), string.Join(' ', action == BootAction.Install ? "install" : "local", node.Name,
                status.Changed.ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture), note) + "\n");
        }
        return status;
    }

    /// <summary>Brings the state directory to the node list: new nodes start at <c>install</c>, known ones keep their state
    /// (a restarted service does not reinstall finished nodes), scripts are rewritten, nodes no longer listed are removed.</summary>
    public void Sync(IReadOnlyList<NetbootNode> nodes, BootScripts scripts)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        foreach (var n in nodes)
        {
            var old = Get(n.Mac);
            Set(n, old?.Action ?? BootAction.Install, old?.Note ?? "new", scripts);
        }
        var macs = nodes.Select(n => n.MacHyphens).ToHashSet(StringComparer.Ordinal);
        foreach (var f in Directory.EnumerateFiles(Path.Combine(_root, "nodes"), "*.state"))
            if (!macs.Contains(Path.GetFileNameWithoutExtension(f))) File.Delete(f);
        foreach (var f in Directory.EnumerateFiles(Path.Combine(TftpRoot, "nodes"), "*.ipxe"))
            if (!macs.Contains(Path.GetFileNameWithoutExtension(f))) File.Delete(f);
    }

    private string StatePath(string mac) => Path.Combine(_root, "nodes", mac.Replace(':', '-') + ".state");

    private static NodeStatus? Read(string path)
    {
        string text;
        try { text = File.ReadAllText(path).Trim(); }
        catch (FileNotFoundException) { return null; }
        var f = text.Split(' ', 4);
        if (f.Length < 3 || !long.TryParse(f[2], CultureInfo.InvariantCulture, out long t)) return null;
        return new NodeStatus(f[1], Path.GetFileNameWithoutExtension(path).Replace('-', ':'), f[0] == "local" ? BootAction.Local : BootAction.Install,
            DateTimeOffset.FromUnixTimeSeconds(t), f.Length > 3 ? f[3] : "");
    }

    internal static void WriteAtomically(string path, string content)
    {
        string tmp = path + ".tmp";
        File.WriteAllText(tmp, content);
        File.Move(tmp, path, overwrite: true);
    }
}

/// <summary>
/// The iPXE scripts the nodes run. <c>boot.ipxe</c> (what DHCP names for iPXE clients) chains the node's own
/// <c>nodes/MAC.ipxe</c>: install loads the kernel and initramfs with the node's arguments; local leaves the
/// network boot so the firmware boots the disk (BIOS: <c>sanboot --drive 0x80</c>; UEFI: <c>exit</c> to the next boot entry).
/// </summary>
public sealed class BootScripts
{
    /// <summary>Kernel command line for every install boot (console, server, install target, ...), without per-node parts.</summary>
    public required string KernelArguments { get; init; }

    /// <summary>Address and port the image reports a verified install to (<c>ka.report=</c>).</summary>
    public required string ReportTo { get; init; }

    /// <summary>The generic entry script.</summary>
    public static string Entry =>
        """
        #!ipxe
        # ka-deploy netboot: each node's next step is in its own script, by MAC.
        chain nodes/${netX/mac:hexhyp}.ipxe || goto unknown
        :unknown
        echo ka-deploy netboot: no entry for ${netX/mac}; leaving network boot
        exit 1

        """;

    /// <summary>The script of one node for one action.</summary>
    public string For(NetbootNode node, BootAction action)
    {
        ArgumentNullException.ThrowIfNull(node);
        return action == BootAction.Install
            ? $"""
              #!ipxe
              # {node.Name} {node.Mac}: install
              echo ka-deploy netboot: {node.Name} installs
              kernel /vmlinuz initrd=initrd.img {KernelArguments} ka.name={node.Name} ka.mac={node.Mac} ka.report={ReportTo}
              initrd /initrd.img
              boot

              """
            : $"""
              #!ipxe
              # {node.Name} {node.Mac}: boot from the local disk
              echo ka-deploy netboot: {node.Name} boots from its disk
              iseq ${"{"}platform{"}"} efi && exit 1 ||
              sanboot --no-describe --drive 0x80 || exit 1

              """;
    }
}
