using System.CommandLine;
using System.Globalization;
using System.Net;
using KaDeploy.Netboot;

namespace KaDeploy.Cli;

/// <summary><c>ka-deploy netboot image|serve|status|state</c>: bare nodes boot from the network and install themselves.</summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal static class NetbootCommands
{
    private const string DefaultState = "/var/lib/ka-deploy/netboot";

    public static Command Command()
    {
        var netboot = new Command("netboot", "Network boot: build the install image, serve DHCP/TFTP/iPXE to the listed nodes, show their states.");
        netboot.Subcommands.Add(ImageCommand());
        netboot.Subcommands.Add(ServeCommand());
        netboot.Subcommands.Add(StatusCommand());
        netboot.Subcommands.Add(StateCommand());
        return netboot;
    }

    private static Option<string> KernelPackageOption() => new("--kernel-package")
    {
        Description = "Debian kernel package (downloaded with apt-get, never installed) or a .deb file", DefaultValueFactory = _ => "linux-image-amd64",
    };

    private static Option<string> CacheOption() => new("--cache") { Description = "Cache of packages and images", DefaultValueFactory = _ => "/var/cache/ka-deploy/netboot" };

    private static Option<string> StateOption() => new("--state-dir") { Description = "State directory (dnsmasq configuration, leases, pid, TFTP root, node states)", DefaultValueFactory = _ => DefaultState };

    private static BootImage BuildImage(string kernelPackage, string cache, string? client, bool rebuild, TextWriter log) =>
        BootImageBuilder.Build(new BootImageOptions
        {
            KernelPackage = kernelPackage, CacheDirectory = cache, Rebuild = rebuild, Log = log,
            ClientBinary = client ?? Environment.ProcessPath ?? throw new KaDeployException("cannot tell where this ka-deploy binary is; give --client"),
        });

    private static void PrintImage(BootImage image, TextWriter log) =>
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"netboot image: {image.Directory}\n  kernel {image.KernelVersion}: {image.KernelBytes / 1048576.0:0.0} MiB, initramfs {image.InitrdBytes / 1048576.0:0.0} MiB, {(image.FromCache ? "from cache" : "built")} in {image.BuildTime.TotalSeconds:0.0} s"));

    private static Command ImageCommand()
    {
        var cmd = new Command("image", "Build (or find cached) the network-boot kernel and initramfs; prints what went in and the size.");
        var kernel = KernelPackageOption();
        var cache = CacheOption();
        var client = new Option<string?>("--client") { Description = "NativeAOT ka-deploy binary for the image (default: this one)" };
        var rebuild = new Option<bool>("--rebuild") { Description = "Build even if an image with the same inputs is cached" };
        var output = new Option<string?>("--output", "-o") { Description = "Also copy vmlinuz, initrd.img and manifest.txt into this directory" };
        foreach (var o in new Option[] { kernel, cache, client, rebuild, output }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var image = BuildImage(p.GetValue(kernel)!, p.GetValue(cache)!, p.GetValue(client), p.GetValue(rebuild), Console.Out);
            if (image.FromCache) foreach (var line in File.ReadLines(image.Manifest)) Console.Out.WriteLine("  " + line);
            if (p.GetValue(output) is { } dir)
            {
                Directory.CreateDirectory(dir);
                foreach (var f in new[] { image.Kernel, image.Initrd, image.Manifest }) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), overwrite: true);
            }
            PrintImage(image, Console.Out);
            return 0;
        });
        return cmd;
    }

    private static Command ServeCommand()
    {
        var cmd = new Command("serve", "Run the boot service (dnsmasq DHCP or proxy-DHCP + TFTP + iPXE) for the nodes of a node list, until stopped.");
        var iface = new Option<string>("--interface", "-i") { Description = "Interface the nodes boot on", Required = true };
        var nodes = new Option<string>("--nodes") { Description = "Node list: NAME MAC [ADDRESS] [key=value...] per line", Required = true };
        var range = new Option<string?>("--range") { Description = "DHCP address range START,END on the interface's network" };
        var proxy = new Option<bool>("--proxy") { Description = "Proxy-DHCP beside the site's DHCP server: boot information only, no addresses" };
        var state = StateOption();
        var server = new Option<string?>("--server") { Description = "ka-deploy server HOST[:PORT] the nodes install from (default: found by --session discovery)" };
        var session = new Option<string>("--session", "-s") { Description = "Session name the nodes look for when --server is not given", DefaultValueFactory = _ => "default" };
        var install = new Option<string?>("--install") { Description = "Whole-node install onto this disk of each node (client --install)" };
        var device = new Option<string?>("--device") { Description = "Raw image or device payload written to this device of each node (client --device)" };
        var after = new Option<string>("--after") { Description = "After the install: reboot, poweroff or shell", DefaultValueFactory = _ => "reboot" };
        var console = new Option<string>("--console") { Description = "Kernel console arguments of the install boot", DefaultValueFactory = _ => "console=tty0 console=ttyS0,115200" };
        var kernelArgs = new Option<string?>("--kernel-args") { Description = "More kernel arguments for the install boot" };
        var reportPort = new Option<int>("--report-port") { Description = "TCP port nodes report a verified install to", DefaultValueFactory = _ => 30767 };
        var kernel = KernelPackageOption();
        var cache = CacheOption();
        foreach (var o in new Option[] { iface, nodes, range, proxy, state, server, session, install, device, after, console, kernelArgs, reportPort, kernel, cache })
            cmd.Options.Add(o);
        // Security (issue 9): the key goes into the boot configuration (ka.key=), never onto this command line.
        var keyFile = Opt.KeyFile("Pre-shared key of the session, given to the nodes as ka.key= in the boot configuration (readable by whoever reaches the TFTP server: README \"Security\")");
        cmd.Options.Add(keyFile);
        cmd.SetAction(async (p, ct) =>
        {
            var log = Console.Error;
            // Everything that can be refused without building the image is checked first (the build takes a while).
            BootService.CheckInterface(p.GetValue(iface)!);
            var list = NodeList.Load(p.GetValue(nodes)!);
            string afterValue = p.GetValue(after)!;
            if (afterValue is not ("reboot" or "poweroff" or "shell")) throw new KaDeployException($"--after {afterValue}: expected reboot, poweroff or shell");
            string? installDisk = p.GetValue(install), rawDevice = p.GetValue(device);
            if ((installDisk is null) == (rawDevice is null)) throw new KaDeployException("give exactly one of --install DISK (whole node) or --device DEV (raw image)");
            var args = new List<string> { p.GetValue(console)! };
            args.Add(p.GetValue(server) is { } s ? $"ka.server={s}" : $"ka.session={p.GetValue(session)}");
            args.Add(installDisk is not null ? $"ka.install={installDisk}" : $"ka.device={rawDevice}");
            args.Add($"ka.after={afterValue}");
            if (p.GetValue(kernelArgs) is { } extra) args.Add(extra);
            if (p.GetValue(keyFile) is { } keyPath)
            {
                using var key = KaDeploy.Security.PresharedKey.LoadFile(keyPath);
                args.Add(key.ToKernelArgument());
                log.WriteLine($"ka-deploy netboot: nodes get key {key.Fingerprint} on their kernel command line (anyone who can reach the TFTP server can read it)");
            }
            var image = BuildImage(p.GetValue(kernel)!, p.GetValue(cache)!, null, false, log);
            PrintImage(image, log);
            var service = new BootService(new BootServiceOptions
            {
                Interface = p.GetValue(iface)!, Nodes = list, Proxy = p.GetValue(proxy), Range = ParseRange(p.GetValue(range)),
                Image = image, StateDirectory = p.GetValue(state)!, KernelArguments = string.Join(' ', args), ReportPort = p.GetValue(reportPort), Log = log,
            });
            await service.RunAsync(ct);
            return 0;
        });
        return cmd;
    }

    private static Command StatusCommand()
    {
        var cmd = new Command("status", "List the nodes of the boot service and what their next network boot does.");
        var state = StateOption();
        cmd.Options.Add(state);
        cmd.SetAction(p =>
        {
            string dir = p.GetValue(state)!;
            if (!Directory.Exists(Path.Combine(dir, "nodes"))) throw new KaDeployException($"{dir}: no boot service state here (start `ka-deploy netboot serve` first)");
            var pidFile = Path.Combine(dir, "dnsmasq.pid");
            Console.Out.WriteLine(File.Exists(pidFile) ? $"boot service running (dnsmasq pid {File.ReadAllText(pidFile).Trim()})" : "boot service not running");
            var leases = File.Exists(Path.Combine(dir, "dnsmasq.leases"))
                ? File.ReadLines(Path.Combine(dir, "dnsmasq.leases")).Select(l => l.Split(' ')).Where(f => f.Length >= 3).GroupBy(f => f[1]).ToDictionary(g => g.Key, g => g.Last()[2])
                : [];
            Console.Out.WriteLine($"{"node",-16} {"mac",-17} {"next boot",-9} {"address",-15} changed               note");
            foreach (var s in new NodeStateStore(dir).List())
                Console.Out.WriteLine($"{s.Name,-16} {s.Mac,-17} {(s.Action == BootAction.Install ? "install" : "local"),-9} {leases.GetValueOrDefault(s.Mac, "-"),-15} {s.Changed:yyyy-MM-dd HH:mm:ss}Z  {s.Note}");
            return 0;
        });
        return cmd;
    }

    private static Command StateCommand()
    {
        var cmd = new Command("state", "Set what a node's next network boot does: install (again) or local (boot its disk).");
        var node = new Argument<string>("node") { Description = "Node name or MAC" };
        var action = new Argument<string>("action") { Description = "install or local" };
        var state = StateOption();
        cmd.Arguments.Add(node);
        cmd.Arguments.Add(action);
        cmd.Options.Add(state);
        cmd.SetAction(p =>
        {
            string dir = p.GetValue(state)!, which = p.GetValue(node)!;
            var act = p.GetValue(action) switch { "install" => BootAction.Install, "local" => BootAction.Local, var a => throw new KaDeployException($"action {a}: expected install or local") };
            var store = new NodeStateStore(dir);
            var current = store.List().FirstOrDefault(s => s.Name == which || s.Mac == NodeList.NormalizeMac(which))
                ?? throw new KaDeployException($"{which}: not a node of the boot service in {dir}");
            var scripts = ScriptsFromState(dir);
            store.Set(new NetbootNode(current.Name, current.Mac, null, []), act, "set by operator", scripts);
            Console.Out.WriteLine($"{current.Name} ({current.Mac}): next network boot {(act == BootAction.Install ? "installs" : "boots its disk")}");
            return 0;
        });
        return cmd;
    }

    private static BootScripts ScriptsFromState(string dir)
    {
        string file = Path.Combine(dir, "boot-arguments");
        if (!File.Exists(file)) throw new KaDeployException($"{dir}: no boot-arguments (start `ka-deploy netboot serve` once)");
        var lines = File.ReadAllLines(file);
        return new BootScripts { KernelArguments = lines[0], ReportTo = lines[1] };
    }

    private static (IPAddress, IPAddress)? ParseRange(string? text)
    {
        if (text is null) return null;
        var parts = text.Split(',');
        if (parts.Length != 2 || !IPAddress.TryParse(parts[0], out var a) || !IPAddress.TryParse(parts[1], out var b))
            throw new KaDeployException($"--range {text}: expected START,END (two IPv4 addresses)");
        return (a, b);
    }
}
