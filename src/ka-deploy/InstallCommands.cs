using System.CommandLine;
using KaDeploy.Install;
using KaDeploy.Payloads;
using KaDeploy.Protocol;

namespace KaDeploy.Cli;

/// <summary>The whole-node install options of `server` and `client`: a thin layer over KaDeploy.Install.</summary>
internal static class InstallCommands
{
    /// <summary>The server's install options.</summary>
    internal sealed record ServerInstallOptions(Option<bool> Install, Option<string?> Layout, Option<string?> Root, Option<string?> Hooks,
        Option<int[]> Raw, Option<bool> DryRun);

    /// <summary>The client's install options.</summary>
    internal sealed record ClientInstallOptions(Option<string?> Install, Option<bool> DryRun, Option<bool> Reboot);

    public static ServerInstallOptions AddServerOptions(Command cmd)
    {
        var o = new ServerInstallOptions(
            new Option<bool>("--install") { Description = "Whole-node install: send the layout, every file system and the node list; clients run --install DISK" },
            Opt.ReadableFile("--layout", "With --install: layout file (small language, or TOML if it ends in .toml) instead of the source's own disk"),
            Opt.ExistingDirectory("--install-root", "With --install: root of the system to clone (default /)"),
            Opt.ExistingDirectory("--hooks", "With --install: directory of executables run chrooted in each clone"),
            Opt.RepeatedInt("--raw-partition", "With --install: source partition number to copy block by block (repeatable)", 1, 128),
            new Option<bool>("--dry-run") { Description = "With --install: print each node's plan and exit" });
        foreach (var opt in new Option[] { o.Install, o.Layout, o.Root, o.Hooks, o.Raw, o.DryRun }) cmd.Options.Add(opt);
        return o;
    }

    public static ClientInstallOptions AddClientOptions(Command cmd)
    {
        var o = new ClientInstallOptions(
            Opt.Path("--install", "Whole-node install onto this disk (partition, mkfs, receive, configure, boot loader)", "DISK", "/nonexistent/ka-deploy-disk", "file"),
            new Option<bool>("--dry-run") { Description = "With --install: print this node's exact plan, receive and verify, write nothing" },
            new Option<bool>("--reboot") { Description = "With --install: reboot once the node is installed (after the release with -w)" });
        foreach (var opt in new Option[] { o.Install, o.DryRun, o.Reboot }) cmd.Options.Add(opt);
        return o;
    }

    /// <summary>Server: the multi-part source and the log of its parts (report, live view), or nulls when --install is not
    /// given; an exit code for a dry run.</summary>
    public static async Task<(IPayloadSource? Source, int? ExitCode, InstallPartLog? Parts)> ServerSourceAsync(ParseResult p, ServerInstallOptions o, string session,
        string? nodesFile, IReadOnlyList<string> excludes, TextWriter log, CancellationToken ct, DigestAlgorithm digest = DigestAlgorithm.Sha256)
    {
        if (!p.GetValue(o.Install))
        {
            if (p.GetValue(o.Layout) is not null || p.GetValue(o.Hooks) is not null || p.GetValue(o.DryRun) || p.GetValue(o.Root) is not null)
                throw new KaDeployException("--layout, --install-root, --hooks and --dry-run go with --install");
            return (null, null, null);
        }
        var nodes = nodesFile is null ? [] : NodeList.Load(nodesFile);
        int lastPart = 0; // known once the manifest is built; parts are sent only after that
        var (source, manifest) = await InstallSession.BuildAsync(new InstallSourceOptions
        {
            SourceRoot = p.GetValue(o.Root) ?? "/", LayoutFile = p.GetValue(o.Layout), Nodes = nodes, HooksDirectory = p.GetValue(o.Hooks),
            RawPartitions = p.GetValue(o.Raw) ?? [], Session = session, Excludes = excludes, Digest = digest,
            Warn = w => { lock (log) log.WriteLine("ka-deploy server: warning: " + w); },
            OnPart = e => { lock (log) log.WriteLine("ka-deploy server: " + InstallSession.Describe(e, lastPart)); },
        }, ct).ConfigureAwait(false);
        lastPart = manifest.Parts.Count;
        if (p.GetValue(o.DryRun))
        {
            Console.Out.WriteLine($"dry run: install session '{session}', {source.Description}; nothing is sent");
            foreach (var n in manifest.Nodes) Console.Out.Write(PlanText.DescribeForServer(manifest, n));
            return (source, 0, null);
        }
        log.WriteLine($"ka-deploy server: install: {manifest.Layout.Table} layout of {manifest.Layout.Partitions.Count} partitions, {source.Description}");
        return (source, null, InstallPartLog.Follow(source));
    }

    /// <summary>Client: the installer sink factory, or null when --install is not given. Checks the disk now, before registering.</summary>
    public static Func<Plan, IPayloadSink>? ClientSinks(ParseResult p, ClientInstallOptions o, string nodeName, TextWriter log)
    {
        if (p.GetValue(o.Install) is not { } disk)
        {
            if (p.GetValue(o.DryRun) || p.GetValue(o.Reboot)) throw new KaDeployException("--dry-run and --reboot go with --install DISK");
            return null;
        }
        // Fail now, not after the whole cluster has waited for us.
        try { DiskGuard.Check(disk); }
        catch (KaDeployException e) { throw new KaDeployException($"--install {disk}: {e.Message}"); }
        var options = new NodeInstallOptions
        {
            Disk = disk, NodeName = nodeName, DryRun = p.GetValue(o.DryRun),
            Log = l => { lock (log) log.WriteLine("ka-deploy client: " + l); },
            Warn = w => { lock (log) log.WriteLine("ka-deploy client: warning: " + w); },
        };
        return plan => plan.Kind == PayloadKind.Parts
            ? new InstallerSink(options)
            : throw new KaDeployException($"--install needs an install session (server --install); this session sends {plan.Kind}");
    }

    /// <summary>Client, after the session: --reboot.</summary>
    public static async Task<int> AfterClientAsync(ParseResult p, ClientInstallOptions o, bool verified, TextWriter log)
    {
        if (!verified) return 1;
        if (p.GetValue(o.Install) is null || !p.GetValue(o.Reboot) || p.GetValue(o.DryRun)) return 0;
        log.WriteLine("ka-deploy client: rebooting");
        await StepRunner.RunAsync("reboot", File.Exists("/bin/systemctl") ? ["systemctl", "reboot"] : ["reboot"], CancellationToken.None).ConfigureAwait(false);
        return 0;
    }
}
