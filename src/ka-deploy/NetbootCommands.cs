using System.Buffers.Binary;
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

    private static Option<string?> KernelPackageOption() => Opt.Checked("--kernel-package",
        $"Debian kernel package (downloaded with apt-get, never installed) or a .deb file (default {DefaultKernelPackage})", "PACKAGE|FILE.deb", CheckKernelPackage, "Linux Image", "file");

    /// <summary>A .deb that exists, or a name Debian allows for a package (policy 5.6.1): refused before anything is downloaded.</summary>
    private static void CheckKernelPackage(string value)
    {
        if (value.EndsWith(".deb", StringComparison.Ordinal))
        {
            if (!File.Exists(value)) throw new KaDeployException($"--kernel-package {value}: no such file");
            return;
        }
        if (value.Length < 2 || !char.IsAsciiLetterLower(value[0]) && !char.IsAsciiDigit(value[0])
            || !value.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '+' or '-' or '.'))
            throw new KaDeployException($"--kernel-package '{value}': not a Debian package name (lower-case letters, digits, + - .) nor a .deb file");
    }

    private static Option<string?> CacheOption() =>
        Opt.Path("--cache", $"Cache of packages and images (default {DefaultCache})", "DIR", "", "directory");

    private static Option<string?> StateOption() =>
        Opt.Path("--state-dir", $"State directory: dnsmasq configuration, leases, pid, TFTP root, node states (default {DefaultState})", "DIR", "", "directory");

    private const string DefaultCache = "/var/cache/ka-deploy/netboot";
    private const string DefaultKernelPackage = "linux-image-amd64";

    /// <summary>Kernel command-line text: one line, no control characters (it goes into an iPXE script).</summary>
    private static void CheckKernelArguments(string name, string value)
    {
        if (value.Any(char.IsControl)) throw new KaDeployException($"{name}: control characters (a newline?) are not allowed in kernel arguments");
    }

    private static BootImage BuildImage(string? kernelPackage, string? cache, string? client, bool rebuild, TextWriter log) =>
        BootImageBuilder.Build(new BootImageOptions
        {
            KernelPackage = kernelPackage ?? DefaultKernelPackage, CacheDirectory = cache ?? DefaultCache, Rebuild = rebuild, Log = log,
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
        var client = Opt.ReadableFile("--client", "NativeAOT ka-deploy binary for the image (default: this one)");
        var rebuild = Opt.Flag("--rebuild", "Build even if an image with the same inputs is cached");
        var output = Opt.Path("--output", "Also copy vmlinuz, initrd.img and manifest.txt into this directory", "DIR", "", "directory", "-o");
        foreach (var o in new Option[] { kernel, cache, client, rebuild, output }) cmd.Options.Add(o);
        cmd.SetAction(p =>
        {
            var image = BuildImage(p.GetValue(kernel), p.GetValue(cache), p.GetValue(client), p.GetValue(rebuild), Console.Out);
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
        var iface = Opt.Checked("--interface", "Interface the nodes boot on", "IFACE", CheckInterfaceName, "bad/name", null, "-i");
        iface.Required = true;
        var nodes = Opt.ReadableFile("--nodes", "Node list: NAME MAC [ADDRESS] [key=value...] per line");
        nodes.Required = true;
        var range = Opt.Checked("--range", "DHCP address range START,END on the interface's network", "START,END", v => ParseRange(v), "198.18.0.100");
        var proxy = Opt.Flag("--proxy", "Proxy-DHCP beside the site's DHCP server: boot information only, no addresses");
        var state = StateOption();
        var server = Opt.HostPort("--server", "ka-deploy server HOST[:PORT] the nodes install from (default: found by --session discovery)");
        var session = Opt.Name("--session", "Session name the nodes look for when --server is not given", "default", "NAME", "-s");
        var install = Opt.Path("--install", "Whole-node install onto this disk of each node (client --install)", "DISK", "", "file");
        var device = Opt.Path("--device", "Raw image or device payload written to this device of each node (client --device)", "DEV", "", "file");
        var after = Opt.Choice("--after", "After the install: reboot, poweroff or shell", ["reboot", "poweroff", "shell"], "reboot");
        var console = Opt.Checked("--console", "Kernel console arguments of the install boot (default: console=tty0 console=ttyS0,115200)", "ARGS",
            v => CheckKernelArguments("--console", v), "console=ttyS0\n");
        var kernelArgs = Opt.Checked("--kernel-args", "More kernel arguments for the install boot", "ARGS", v => CheckKernelArguments("--kernel-args", v), "quiet\n");
        var reportPort = Opt.Port("--report-port", "TCP port nodes report a verified install to", 30767, allowAny: false);
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
            string? installDisk = p.GetValue(install), rawDevice = p.GetValue(device);
            if ((installDisk is null) == (rawDevice is null)) throw new KaDeployException("give exactly one of --install DISK (whole node) or --device DEV (raw image)");
            var args = new List<string> { p.GetValue(console) ?? "console=tty0 console=ttyS0,115200" };
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
            // The interface's lock before the image: a second service on it is refused at once, not after a build.
            using var held = BootService.TakeLock(BootServiceOptions.DefaultLockDirectory, p.GetValue(iface)!);
            var image = BuildImage(p.GetValue(kernel), p.GetValue(cache), null, false, log);
            PrintImage(image, log);
            var service = new BootService(new BootServiceOptions
            {
                HeldLock = held,
                Interface = p.GetValue(iface)!, Nodes = list, Proxy = p.GetValue(proxy), Range = ParseRange(p.GetValue(range)),
                Image = image, StateDirectory = p.GetValue(state) ?? DefaultState, KernelArguments = string.Join(' ', args), ReportPort = p.GetValue(reportPort), Log = log,
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
            string dir = p.GetValue(state) ?? DefaultState;
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
            string dir = p.GetValue(state) ?? DefaultState, which = p.GetValue(node)!;
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

    /// <summary>An interface name the kernel could have (1-15 bytes, no '/', no white space); whether it exists is checked when serving.</summary>
    private static void CheckInterfaceName(string name)
    {
        if (name.Length is 0 or > 15 || name.Any(c => c == '/' || char.IsWhiteSpace(c) || char.IsControl(c)))
            throw new KaDeployException($"--interface '{name}': not an interface name (1 to 15 characters, no '/' or spaces)");
    }

    private static (IPAddress, IPAddress)? ParseRange(string? text)
    {
        if (text is null) return null;
        var parts = text.Split(',');
        if (parts.Length != 2 || !TryParseIPv4(parts[0], out var a) || !TryParseIPv4(parts[1], out var b))
            throw new KaDeployException($"--range {text}: expected START,END (two IPv4 addresses)");
        if (BinaryPrimitives.ReadUInt32BigEndian(a.GetAddressBytes()) > BinaryPrimitives.ReadUInt32BigEndian(b.GetAddressBytes()))
            throw new KaDeployException($"--range {text}: START is after END");
        return (a, b);
    }

    // IPAddress.TryParse also takes "10" or "10.1" (inet_aton forms) and IPv6; a DHCP range wants four dotted numbers.
    private static bool TryParseIPv4(string text, out IPAddress address)
    {
        address = IPAddress.None;
        if (text.Count(c => c == '.') != 3 || !IPAddress.TryParse(text, out var a) || a.AddressFamily != System.Net.Sockets.AddressFamily.InterNetwork) return false;
        address = a;
        return true;
    }
}
