using System.Diagnostics;
using System.Globalization;
using System.Text;
using KaDeploy.Payloads.Block;
using KaDeploy.Payloads.Parts;
using KaDeploy.Payloads.Tar;

namespace KaDeploy.Install;

/// <summary>Settings of one node's install.</summary>
public sealed class NodeInstallOptions
{
    /// <summary>The whole disk to install (checked by <see cref="DiskGuard"/>).</summary>
    public required string Disk { get; init; }
    /// <summary>This node's name, looked up in the manifest's node list (then its MACs).</summary>
    public required string NodeName { get; init; }
    /// <summary>This node's MAC addresses (default: from /sys/class/net).</summary>
    public IReadOnlyList<string>? Macs { get; init; }
    /// <summary>Print the plan and write nothing (the parts are still received and verified).</summary>
    public bool DryRun { get; init; }
    /// <summary>Directory under which the new file systems are mounted while they are filled.</summary>
    public string StagingParent { get; init; } = "/run/ka-deploy";
    /// <summary>Receives log lines (plan, phases, per-part progress).</summary>
    public Action<string> Log { get; init; } = _ => { };
    /// <summary>Receives non-fatal problems.</summary>
    public Action<string> Warn { get; init; } = _ => { };
}

/// <summary>
/// Installs one node from an install manifest and its parts: checks the disk, partitions it (sfdisk), makes each file
/// system with a new UUID and the source's label, mounts them under a staging root, receives each tree (or raw
/// partition) into its place, points fstab/crypttab/resume/GRUB at the new UUIDs, configures the node (host name,
/// hosts, network, machine-id, SSH host keys), installs GRUB (BIOS and/or UEFI) with the clone's own tools in a
/// chroot, runs the session's hooks there, syncs and unmounts. A library API: the CLI's --install and network boot
/// both drive it. Call <see cref="PrepareAsync"/> first, then the phases in order; <see cref="DisposeAsync"/> always.
/// </summary>
public sealed class NodeInstaller : IAsyncDisposable
{
    private readonly NodeInstallOptions _o;
    private readonly List<string> _mounts = [];   // staging mounts, in mount order
    private InstallManifest? _manifest;
    private TargetDisk? _disk;
    private IReadOnlyList<PlannedPartition>? _planned;
    private string _staging = "";
    private readonly HashSet<int> _mtoolsPartitions = [];   // vfat partitions this kernel cannot mount
    private readonly Stopwatch _phaseClock = new();
    private TimeSpan _phaseCpuStart;
    private string? _phase;

    /// <param name="options">Disk, node name, dry run, log.</param>
    public NodeInstaller(NodeInstallOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _o = options;
    }

    /// <summary>This node's entry in the node list (after <see cref="PrepareAsync"/>).</summary>
    public NodeEntry Node { get; private set; } = new();

    /// <summary>The partitions as planned on this disk (after <see cref="PrepareAsync"/>).</summary>
    public IReadOnlyList<PlannedPartition> Planned => _planned ?? [];

    /// <summary>The new machine-id (after <see cref="PrepareAsync"/>).</summary>
    public string MachineId { get; } = Guid.NewGuid().ToString("N");

    /// <summary>Seconds each phase took, in order (for the log and bench/install).</summary>
    public List<(string Phase, double Seconds)> PhaseTimes { get; } = [];

    /// <summary>CPU seconds this process used in each phase, in order (not its children's: mkfs, grub-install).
    /// On a shared machine wall time follows the load; CPU time says what a phase costs.</summary>
    public List<(string Phase, double CpuSeconds)> PhaseCpu { get; } = [];

    /// <summary>Where the new system is mounted while it is filled.</summary>
    public string StagingRoot => _staging;

    private void Log(string s) => _o.Log(s);

    private void BeginPhase(string name)
    {
        EndPhase();
        _phase = name;
        _phaseCpuStart = Environment.CpuUsage.TotalTime;
        _phaseClock.Restart();
    }

    private void EndPhase()
    {
        if (_phase is null) return;
        PhaseTimes.Add((_phase, _phaseClock.Elapsed.TotalSeconds));
        PhaseCpu.Add((_phase, (Environment.CpuUsage.TotalTime - _phaseCpuStart).TotalSeconds));
        _phase = null;
    }

    /// <summary>Finds this node in the list, checks the disk, places the layout on it, and returns the plan's text.
    /// Everything that can refuse a node before a write happens here.</summary>
    public Task<string> PrepareAsync(InstallManifest manifest, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(manifest);
        _manifest = manifest;
        Node = NodeList.Find(manifest.Nodes, _o.NodeName, _o.Macs ?? NodeList.LocalMacs().ToList());
        _disk = DiskGuard.Check(_o.Disk);
        _planned = LayoutPlanner.Plan(manifest.Layout, _disk.Path, _disk.SizeBytes);
        _staging = Path.Combine(_o.StagingParent, $"install-{Environment.ProcessId}-{_disk.Name}");
        return Task.FromResult(PlanText.Describe(manifest, Node, _disk, _planned, MachineId, _staging));
    }

    /// <summary>Writes the partition table and makes every file system.</summary>
    public async Task PartitionAndFormatAsync(CancellationToken ct)
    {
        var (m, disk, planned) = Ready();
        BeginPhase("partition");
        string script = LayoutPlanner.SfdiskScript(m.Layout, planned, m.Layout.Table == "gpt" ? Guid.NewGuid().ToString() : $"0x{Random.Shared.Next():x8}");
        await StepRunner.RunAsync("partition", ["wipefs", "--all", "--quiet", disk.Path], ct).ConfigureAwait(false);
        await StepRunner.RunAsync("partition", ["sfdisk", "--quiet", "--wipe", "always", "--wipe-partitions", "always", disk.Path], ct, stdin: script).ConfigureAwait(false);
        await WaitForPartitionsAsync(disk, planned, ct).ConfigureAwait(false);
        BeginPhase("mkfs");
        foreach (var pp in planned)
        {
            if (LayoutPlanner.MkfsCommand(pp) is { } cmd)
                await StepRunner.RunAsync($"mkfs {Where(pp)}", cmd, ct).ConfigureAwait(false);
        }
        EndPhase();
    }

    private static string Where(PlannedPartition pp) => pp.Spec.MountPoint.Length > 0 ? pp.Spec.MountPoint : pp.Device;

    // The kernel normally re-reads the table when sfdisk asks. Where it does not (a loop device without
    // partition scanning, a busy disk), partx tells it about each partition; devtmpfs then makes the nodes.
    private static async Task WaitForPartitionsAsync(TargetDisk disk, IReadOnlyList<PlannedPartition> planned, CancellationToken ct)
    {
        bool Present() => planned.All(p => File.Exists($"/sys/class/block/{Path.GetFileName(p.Device)}/partition") && File.Exists(p.Device)
            && SectorsOf(p.Device) == p.SizeSectors);
        for (int attempt = 0; attempt < 100 && !Present(); attempt++)
        {
            if (attempt == 5) await StepRunner.RunAsync("partition", ["partx", "--update", disk.Path], ct).ConfigureAwait(false);
            if (attempt == 10) await StepRunner.RunAsync("partition", ["partx", "--add", disk.Path], ct).ConfigureAwait(false);
            await Task.Delay(100, ct).ConfigureAwait(false);
        }
        if (!Present()) throw new InstallStepException("partition", $"the kernel does not show the new partitions of {disk.Path} (partx --update did not help)");
    }

    private static long SectorsOf(string device)
    {
        try
        {
            return long.Parse(File.ReadAllText($"/sys/class/block/{Path.GetFileName(device)}/size").Trim(), CultureInfo.InvariantCulture);
        }
        catch (IOException)
        {
            return -1;
        }
    }

    /// <summary>Mounts the new file systems under the staging root, parents first.</summary>
    public async Task MountAsync(CancellationToken ct)
    {
        var (_, _, planned) = Ready();
        BeginPhase("mount");
        Directory.CreateDirectory(_staging);
        foreach (var pp in planned.Where(p => p.Spec.MountPoint.Length > 0 && p.Spec.Role is PartitionRole.Linux or PartitionRole.Esp)
                     .OrderBy(p => p.Spec.MountPoint == "/" ? 0 : p.Spec.MountPoint.Count(c => c == '/')))
        {
            string at = Staged(pp.Spec.MountPoint);
            Directory.CreateDirectory(at);
            try
            {
                await StepRunner.RunAsync($"mount {pp.Spec.MountPoint}", ["mount", "-t", pp.Spec.FileSystem, pp.Device, at], ct).ConfigureAwait(false);
                _mounts.Add(at);
            }
            catch (InstallStepException e) when (pp.Spec.FileSystem == "vfat" && e.Message.Contains("unknown filesystem type", StringComparison.Ordinal))
            {
                // A kernel without vfat (some build hosts): the ESP is written with mtools instead of a mount.
                _o.Warn($"this kernel cannot mount vfat; {pp.Device} ({pp.Spec.MountPoint}) is written with mtools");
                _mtoolsPartitions.Add(pp.Spec.Number);
            }
        }
        EndPhase();
    }

    /// <summary>The path of <paramref name="mountPoint"/> under the staging root.</summary>
    public string Staged(string mountPoint) => mountPoint == "/" ? _staging : _staging + mountPoint;

    /// <summary>Receives one part (a tree into its file system, a block map into its partition, the hooks).</summary>
    public async Task ReceivePartAsync(PartHeader header, Stream content, CancellationToken ct)
    {
        var (m, _, planned) = Ready();
        var entry = m.Parts.FirstOrDefault(p => p.Index == header.Index)
            ?? throw new KaDeployException($"{PartsFormat.Describe(header)} is not in the manifest");
        if (entry.Kind != header.Kind || entry.Name != header.Name)
            throw new KaDeployException($"{PartsFormat.Describe(header)} does not match the manifest's part {entry.Index} ({entry.Kind} '{entry.Name}')");
        BeginPhase($"part {header.Name}");
        if (entry.Partition == 0 && header.Kind == PartKind.Tree)
        {
            await ExtractAsync(Staged(HooksDir), content, ct).ConfigureAwait(false);
        }
        else
        {
            var pp = planned.FirstOrDefault(p => p.Spec.Number == entry.Partition)
                ?? throw new KaDeployException($"{PartsFormat.Describe(header)}: no partition {entry.Partition} in the layout");
            switch (header.Kind)
            {
                case PartKind.Tree when _mtoolsPartitions.Contains(pp.Spec.Number):
                    string scratch = Path.Combine(_o.StagingParent, $"esp-{Environment.ProcessId}-{pp.Spec.Number}");
                    await ExtractAsync(scratch, content, ct).ConfigureAwait(false);
                    await CopyWithMtoolsAsync(pp.Device, scratch, ct).ConfigureAwait(false);
                    Directory.Delete(scratch, recursive: true);
                    break;
                case PartKind.Tree:
                    await ExtractAsync(Staged(entry.MountPoint), content, ct).ConfigureAwait(false);
                    break;
                case PartKind.BlockMap:
                    await new BlockDeviceSink(pp.Device).ConsumeAsync(content, ct).ConfigureAwait(false);
                    break;
                default:
                    throw new KaDeployException($"{PartsFormat.Describe(header)}: this installer does not take {header.Kind} parts");
            }
        }
        EndPhase();
    }

    private async Task ExtractAsync(string target, Stream content, CancellationToken ct)
    {
        var sink = new TarTreeSink(new TarTreeSinkOptions { Target = target, Force = true, Warn = _o.Warn });
        sink.EnsureTargetUsable();
        await sink.ConsumeAsync(content, ct).ConfigureAwait(false);
    }

    private static async Task CopyWithMtoolsAsync(string device, string dir, CancellationToken ct)
    {
        var env = new Dictionary<string, string> { ["MTOOLS_SKIP_CHECK"] = "1" };
        foreach (var entry in Directory.EnumerateFileSystemEntries(dir))
            await StepRunner.RunAsync("receive ESP", ["mcopy", "-s", "-o", "-i", device, entry, "::/"], ct, environment: env).ConfigureAwait(false);
    }

    /// <summary>Where the hooks are unpacked inside the new system while they run.</summary>
    public const string HooksDir = "/run/ka-deploy-hooks";

    /// <summary>Points the clone at its new file systems and gives it this node's identity.</summary>
    public async Task ConfigureAsync(CancellationToken ct)
    {
        var (m, _, planned) = Ready();
        BeginPhase("configure");
        var changes = NodeConfigurator.Apply(_staging, m, Node, planned, MachineId, _o.Warn);
        foreach (var c in changes) Log("configure: " + c);
        await MountChrootAsync(ct).ConfigureAwait(false);
        if (File.Exists(Staged("/usr/bin/ssh-keygen")))
        {
            await StepRunner.RunAsync("ssh host keys", ["chroot", _staging, "ssh-keygen", "-A"], ct).ConfigureAwait(false);
            Log("configure: new SSH host keys (ssh-keygen -A in the clone)");
        }
        if (changes.Any(c => c.StartsWith("resume", StringComparison.Ordinal)) && File.Exists(Staged("/usr/sbin/update-initramfs")))
            await StepRunner.RunAsync("initramfs", ["chroot", _staging, "update-initramfs", "-u", "-k", "all"], ct, timeout: TimeSpan.FromMinutes(10)).ConfigureAwait(false);
        EndPhase();
    }

    /// <summary>Installs GRUB with the clone's own tools: i386-pc into the disk, x86_64-efi into the ESP (also at the removable path).</summary>
    public async Task InstallBootLoaderAsync(CancellationToken ct)
    {
        var (m, disk, planned) = Ready();
        if (!m.BiosBoot && !m.UefiBoot)
        {
            _o.Warn("the layout has neither a BIOS boot partition (or MBR) nor an EFI system partition: no boot loader is installed");
            return;
        }
        BeginPhase("boot loader");
        await MountChrootAsync(ct).ConfigureAwait(false);
        if (!File.Exists(Staged("/usr/sbin/grub-install")))
            throw new InstallStepException("boot loader", "the clone has no /usr/sbin/grub-install (install grub-pc or grub-efi-amd64 on the source)");
        if (m.BiosBoot)
        {
            if (!Directory.Exists(Staged("/usr/lib/grub/i386-pc")))
                throw new InstallStepException("boot loader", "the clone has no GRUB for BIOS (/usr/lib/grub/i386-pc: install grub-pc-bin on the source)");
            await StepRunner.RunAsync("boot loader (BIOS)", ["chroot", _staging, "grub-install", "--target=i386-pc", disk.Path], ct).ConfigureAwait(false);
        }
        if (m.UefiBoot)
        {
            if (!Directory.Exists(Staged("/usr/lib/grub/x86_64-efi")))
                throw new InstallStepException("boot loader", "the clone has no GRUB for UEFI (/usr/lib/grub/x86_64-efi: install grub-efi-amd64-bin on the source)");
            var esp = planned.First(p => p.Spec.Role == PartitionRole.Esp);
            if (_mtoolsPartitions.Contains(esp.Spec.Number)) await InstallEfiWithMtoolsAsync(esp, planned, ct).ConfigureAwait(false);
            else
            {
                string efiDir = esp.Spec.MountPoint;
                await StepRunner.RunAsync("boot loader (UEFI)", ["chroot", _staging, "grub-install", "--target=x86_64-efi", $"--efi-directory={efiDir}",
                    "--bootloader-id=debian", "--no-nvram"], ct).ConfigureAwait(false);
                await StepRunner.RunAsync("boot loader (UEFI)", ["chroot", _staging, "grub-install", "--target=x86_64-efi", $"--efi-directory={efiDir}",
                    "--removable", "--no-nvram"], ct).ConfigureAwait(false);
            }
        }
        string[] mkconfig = File.Exists(Staged("/usr/sbin/update-grub")) ? ["chroot", _staging, "update-grub"] : ["chroot", _staging, "grub-mkconfig", "-o", "/boot/grub/grub.cfg"];
        await StepRunner.RunAsync("boot loader (grub.cfg)", mkconfig, ct).ConfigureAwait(false);
        EndPhase();
    }

    // What grub-install --target=x86_64-efi --removable does, for a kernel that cannot mount the ESP: the clone's
    // grub-mkimage builds the same image (an embedded config that finds /boot by UUID), the modules go to
    // /boot/grub/x86_64-efi, and mtools puts the image at EFI/BOOT/BOOTX64.EFI and EFI/debian/grubx64.efi.
    private async Task InstallEfiWithMtoolsAsync(PlannedPartition esp, IReadOnlyList<PlannedPartition> planned, CancellationToken ct)
    {
        var boot = planned.FirstOrDefault(p => p.Spec.MountPoint == "/boot") ?? planned.First(p => p.Spec.MountPoint == "/");
        string prefix = boot.Spec.MountPoint == "/boot" ? "/grub" : "/boot/grub";
        string fsModule = boot.Spec.FileSystem switch { "xfs" => "xfs", "btrfs" => "btrfs", _ => "ext2" };
        Directory.CreateDirectory(Staged("/boot/grub/x86_64-efi"));
        foreach (var f in Directory.EnumerateFiles(Staged("/usr/lib/grub/x86_64-efi")))
            if (f.EndsWith(".mod", StringComparison.Ordinal) || f.EndsWith(".lst", StringComparison.Ordinal))
                File.Copy(f, Staged("/boot/grub/x86_64-efi/" + Path.GetFileName(f)), overwrite: true);
        string cfg = Staged("/run/ka-deploy-load.cfg");
        await File.WriteAllTextAsync(cfg, $"search.fs_uuid {boot.NewUuid} root\nset prefix=($root)'{prefix}'\n", ct).ConfigureAwait(false);
        await StepRunner.RunAsync("boot loader (UEFI)", ["chroot", _staging, "grub-mkimage", "-O", "x86_64-efi", "-o", "/run/ka-deploy-bootx64.efi",
            "-c", "/run/ka-deploy-load.cfg", "-p", prefix, "part_gpt", "part_msdos", fsModule, "fat", "search", "search_fs_uuid", "normal"], ct).ConfigureAwait(false);
        var env = new Dictionary<string, string> { ["MTOOLS_SKIP_CHECK"] = "1" };
        foreach (var dir in (string[])["::/EFI", "::/EFI/BOOT", "::/EFI/debian"])
        {
            try { await StepRunner.RunAsync("boot loader (UEFI)", ["mmd", "-i", esp.Device, dir], ct, environment: env).ConfigureAwait(false); }
            catch (InstallStepException e) when (e.Message.Contains("already exists", StringComparison.Ordinal)) { }
        }
        string image = Staged("/run/ka-deploy-bootx64.efi");
        await StepRunner.RunAsync("boot loader (UEFI)", ["mcopy", "-o", "-i", esp.Device, image, "::/EFI/BOOT/BOOTX64.EFI"], ct, environment: env).ConfigureAwait(false);
        await StepRunner.RunAsync("boot loader (UEFI)", ["mcopy", "-o", "-i", esp.Device, image, "::/EFI/debian/grubx64.efi"], ct, environment: env).ConfigureAwait(false);
        File.Delete(image);
        File.Delete(cfg);
    }

    /// <summary>Runs every executable of the session's hooks directory, in name order, chrooted in the clone.</summary>
    public async Task RunHooksAsync(CancellationToken ct)
    {
        var (m, disk, _) = Ready();
        string dir = Staged(HooksDir);
        if (!Directory.Exists(dir)) return;
        BeginPhase("hooks");
        await MountChrootAsync(ct).ConfigureAwait(false);
        var env = HookEnvironment(m, Node, disk);
        foreach (var f in Directory.EnumerateFiles(dir).Order(StringComparer.Ordinal))
        {
            if (!Platform.Posix.TryLStat(f, out var st, out _) || st.Kind != Platform.FileKind.Regular || (st.Permissions & 0x40) == 0) continue;
            string name = Path.GetFileName(f);
            string output = await StepRunner.RunAsync($"hook {name}", ["chroot", _staging, $"{HooksDir}/{name}"], ct, environment: env, timeout: TimeSpan.FromMinutes(30)).ConfigureAwait(false);
            Log($"hook {name}: ok{(output.Length > 0 ? ": " + StepRunner.OneLine(output) : "")}");
        }
        Directory.Delete(dir, recursive: true);
        EndPhase();
    }

    /// <summary>The variables every hook gets: KA_NODE_NAME, KA_NODE_ADDRESS, KA_NODE_INDEX, KA_SESSION, ... and each key=value.</summary>
    public static Dictionary<string, string> HookEnvironment(InstallManifest m, NodeEntry node, TargetDisk disk)
    {
        var env = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ["KA_NODE_NAME"] = node.Name,
            ["KA_NODE_ADDRESS"] = node.Address.Split('/')[0],
            ["KA_NODE_PREFIX"] = node.Address.Contains('/') ? node.Address.Split('/')[1] : "",
            ["KA_NODE_MAC"] = node.Mac,
            ["KA_NODE_INDEX"] = node.Index.ToString(CultureInfo.InvariantCulture),
            ["KA_SESSION"] = m.Session,
            ["KA_DISK"] = disk.Path,
        };
        foreach (var (k, v) in node.Vars) env.TryAdd(k, v);
        return env;
    }

    private bool _chrootMounted;

    // The clone's tools run in a chroot with /proc, /sys and a private /dev holding only this disk, its partitions and
    // the usual character devices: grub-mkconfig needs /dev/disk/by-uuid (which a boot environment without udev
    // lacks), and no hook or package script can reach another disk by accident.
    private async Task MountChrootAsync(CancellationToken ct)
    {
        if (_chrootMounted) return;
        var (_, disk, planned) = Ready();
        string dev = Staged("/dev");
        Directory.CreateDirectory(dev);
        await MountAsync("chroot /dev", ["mount", "-t", "tmpfs", "-o", "mode=0755,size=16m", "ka-dev", dev], dev, ct).ConfigureAwait(false);
        var nodes = new List<string> { "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", disk.Path };
        nodes.AddRange(planned.Select(p => p.Device));
        await StepRunner.RunAsync("chroot /dev", ["cp", "-a", .. nodes.Where(File.Exists), dev + "/"], ct).ConfigureAwait(false);
        foreach (var sub in (string[])["pts", "shm", "disk/by-uuid", "disk/by-partuuid", "disk/by-label"]) Directory.CreateDirectory(Path.Combine(dev, sub));
        await MountAsync("chroot /dev", ["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666", "ka-devpts", dev + "/pts"], dev + "/pts", ct).ConfigureAwait(false);
        File.CreateSymbolicLink(dev + "/ptmx", "pts/ptmx");
        File.CreateSymbolicLink(dev + "/fd", "/proc/self/fd");
        File.CreateSymbolicLink(dev + "/stdin", "/proc/self/fd/0");
        File.CreateSymbolicLink(dev + "/stdout", "/proc/self/fd/1");
        File.CreateSymbolicLink(dev + "/stderr", "/proc/self/fd/2");
        foreach (var p in planned)
        {
            string target = "../../" + Path.GetFileName(p.Device);
            if (p.NewUuid.Length > 0) File.CreateSymbolicLink($"{dev}/disk/by-uuid/{p.NewUuid}", target);
            if (p.NewPartUuid.Length > 0 && Ready().Manifest.Layout.Table == "gpt") File.CreateSymbolicLink($"{dev}/disk/by-partuuid/{p.NewPartUuid}", target);
            if (p.Spec.Label.Length > 0 && !File.Exists($"{dev}/disk/by-label/{p.Spec.Label}") && !p.Spec.Label.Contains('/'))
                File.CreateSymbolicLink($"{dev}/disk/by-label/{p.Spec.Label}", target);
        }
        Directory.CreateDirectory(Staged("/proc"));
        Directory.CreateDirectory(Staged("/sys"));
        Directory.CreateDirectory(Staged("/run"));
        await MountAsync("chroot /proc", ["mount", "-t", "proc", "proc", Staged("/proc")], Staged("/proc"), ct).ConfigureAwait(false);
        await MountAsync("chroot /sys", ["mount", "-t", "sysfs", "sysfs", Staged("/sys")], Staged("/sys"), ct).ConfigureAwait(false);
        _chrootMounted = true;
    }

    private async Task MountAsync(string step, string[] argv, string at, CancellationToken ct)
    {
        await StepRunner.RunAsync(step, argv, ct).ConfigureAwait(false);
        _mounts.Add(at);
    }

    /// <summary>Syncs and unmounts everything, children first; success is reported only after this.</summary>
    public async Task FinishAsync(CancellationToken ct)
    {
        BeginPhase("sync and unmount");
        await StepRunner.RunAsync("sync", ["sync"], ct).ConfigureAwait(false);
        for (int i = _mounts.Count - 1; i >= 0; i--)
        {
            await StepRunner.RunAsync("unmount", ["umount", _mounts[i]], ct).ConfigureAwait(false);
            _mounts.RemoveAt(i);
        }
        if (Directory.Exists(_staging)) Directory.Delete(_staging, recursive: false);
        EndPhase();
        Log("phases: " + string.Join(", ", PhaseTimes.Select(p => $"{p.Phase} {p.Seconds.ToString("0.0", CultureInfo.InvariantCulture)} s")));
        Log("phase CPU (ka-deploy itself): " + string.Join(", ", PhaseCpu.Select(p => $"{p.Phase} {p.CpuSeconds.ToString("0.00", CultureInfo.InvariantCulture)} s")));
    }

    /// <summary>On failure: unmounts whatever is still mounted (lazily if busy). Idempotent.</summary>
    public async ValueTask DisposeAsync()
    {
        for (int i = _mounts.Count - 1; i >= 0; i--)
        {
            try
            {
                await StepRunner.RunAsync("unmount", ["umount", _mounts[i]], CancellationToken.None, timeout: TimeSpan.FromSeconds(60)).ConfigureAwait(false);
            }
            catch (InstallStepException)
            {
                try { await StepRunner.RunAsync("unmount", ["umount", "-l", _mounts[i]], CancellationToken.None).ConfigureAwait(false); }
                catch (InstallStepException e) { _o.Warn(e.Message); }
            }
        }
        _mounts.Clear();
        try { if (_staging.Length > 0 && Directory.Exists(_staging)) Directory.Delete(_staging, recursive: false); }
        catch (IOException) { }
    }

    private (InstallManifest Manifest, TargetDisk Disk, IReadOnlyList<PlannedPartition> Planned) Ready() =>
        _manifest is null || _disk is null || _planned is null
            ? throw new InvalidOperationException("PrepareAsync first")
            : (_manifest, _disk, _planned);
}
