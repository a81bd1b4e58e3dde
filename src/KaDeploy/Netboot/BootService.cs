using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

namespace KaDeploy.Netboot;

/// <summary>How <c>ka-deploy netboot serve</c> runs.</summary>
public sealed class BootServiceOptions
{
    /// <summary>The interface the nodes boot on (must exist and have an IPv4 address).</summary>
    public required string Interface { get; init; }

    /// <summary>DHCP address range (server mode); null in proxy mode.</summary>
    public (IPAddress Start, IPAddress End)? Range { get; init; }

    /// <summary>Proxy-DHCP beside the site's DHCP server instead of handing out addresses.</summary>
    public bool Proxy { get; init; }

    /// <summary>The nodes, by MAC.</summary>
    public required IReadOnlyList<NetbootNode> Nodes { get; init; }

    /// <summary>Kernel and initramfs to boot.</summary>
    public required BootImage Image { get; init; }

    /// <summary>State directory: dnsmasq configuration, leases and pid, TFTP root, node states.</summary>
    public string StateDirectory { get; init; } = "/var/lib/ka-deploy/netboot";

    /// <summary>Kernel command line of the install boots (server, install target, console, after).</summary>
    public required string KernelArguments { get; init; }

    /// <summary>TCP port on the interface's address where nodes report a verified install.</summary>
    public int ReportPort { get; init; } = 30767;

    /// <summary>Where iPXE's firmware images are (Debian's ipxe package).</summary>
    public string IpxeDirectory { get; init; } = "/usr/lib/ipxe";

    /// <summary>DHCPDISCOVERs sent by the rogue-server check, and how long each waits.</summary>
    public int ProbeTries { get; init; } = 3;

    /// <summary>How long each probe waits for an offer.</summary>
    public TimeSpan ProbeWait { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Directory of the per-interface locks (one service per interface and network namespace).</summary>
    public string LockDirectory { get; init; } = DefaultLockDirectory;

    /// <summary>The default <see cref="LockDirectory"/>.</summary>
    public const string DefaultLockDirectory = "/run/ka-deploy";

    /// <summary>The interface's lock when the caller took it already (<see cref="BootService.TakeLock"/>), so that a second
    /// service is refused before it spends a minute building an image; the caller disposes it. Null: the service takes it.</summary>
    public IDisposable? HeldLock { get; init; }

    /// <summary>Where the service reports.</summary>
    public TextWriter Log { get; init; } = TextWriter.Null;

    /// <summary>Called once dnsmasq answers and the report port listens (tests, scripts).</summary>
    public Action? Ready { get; init; }
}

/// <summary>
/// The boot service: checks the link, writes the TFTP root and the per-node scripts, runs dnsmasq in the foreground
/// as a child (stopped, and its pid file removed, when the service stops), and switches a node to boot from its disk
/// when the node reports a verified install from the MAC it is listed with.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class BootService
{
    private readonly BootServiceOptions _o;
    private readonly Dictionary<string, NetbootNode> _byMac;

    /// <summary>Checks the options that need no system access.</summary>
    public BootService(BootServiceOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _o = options;
        if (options.Proxy == (options.Range is not null))
            throw new KaDeployException(options.Proxy ? "--proxy hands out no addresses: leave out --range" : "give --range START,END for the addresses to hand out, or --proxy beside an existing DHCP server");
        _byMac = options.Nodes.ToDictionary(n => n.Mac, StringComparer.Ordinal);
    }

    /// <summary>Runs until cancelled; returns when dnsmasq has stopped.</summary>
    public async Task RunAsync(CancellationToken cancellationToken)
    {
        var log = _o.Log;
        string ifName = _o.Interface;
        CheckInterface(ifName);
        var (address, prefix) = InterfaceAddress(ifName);
        if (_o.Range is { } range && (!SameNetwork(range.Start, address, prefix) || !SameNetwork(range.End, address, prefix)))
            throw new KaDeployException($"--range {range.Start},{range.End} is not in {ifName}'s network {address}/{prefix}");

        using var lockFile = _o.HeldLock is null ? TakeLock(_o.LockDirectory, ifName) : null;
        byte[] mac = Convert.FromHexString(File.ReadAllText($"/sys/class/net/{ifName}/address").Trim().Replace(":", "", StringComparison.Ordinal));
        log.WriteLine($"netboot: looking for DHCP servers on {ifName} ({_o.ProbeTries} DHCPDISCOVERs, {_o.ProbeWait.TotalSeconds:0.#} s each)");
        var offers = await DhcpProbe.FindServersAsync(ifName, mac, _o.ProbeTries, _o.ProbeWait, cancellationToken).ConfigureAwait(false);
        string servers = string.Join(", ", offers.Select(o => $"{o.Server} (offered {o.Offered})").Distinct());
        if (!_o.Proxy && offers.Count > 0)
            throw new KaDeployException($"another DHCP server answers on {ifName}: {servers}; refusing to answer DHCP beside it (use --proxy to add network boot to it)");
        log.WriteLine(_o.Proxy
            ? offers.Count > 0 ? $"netboot: proxy-DHCP beside {servers}" : $"netboot: warning: no DHCP server answered on {ifName}; in --proxy mode the nodes need one"
            : "netboot: no other DHCP server on the link");

        string state = Path.GetFullPath(_o.StateDirectory);
        Directory.CreateDirectory(state);
        var store = new NodeStateStore(state);
        var scripts = new BootScripts { KernelArguments = _o.KernelArguments, ReportTo = $"{address}:{_o.ReportPort}" };
        PrepareTftp(store.TftpRoot);
        store.Sync(_o.Nodes, scripts);
        // `netboot state` rewrites a node's script without the service's options: it reads them from here.
        NodeStateStore.WriteAtomically(Path.Combine(state, "boot-arguments"), scripts.KernelArguments + "\n" + scripts.ReportTo + "\n");
        StopStaleDnsmasq(state);
        string conf = Path.Combine(state, "dnsmasq.conf");
        IPAddress? network = _o.Proxy ? Network(address, prefix) : null;
        File.WriteAllText(conf, DnsmasqConfig.Render(ifName, _o.Range, network, _o.Nodes, state));

        using var listener = new TcpListener(address, _o.ReportPort);
        try { listener.Start(); }
        catch (SocketException e) { throw new KaDeployException($"report port {address}:{_o.ReportPort}: {e.Message}"); }

        using var dnsmasq = StartDnsmasq(conf);
        log.WriteLine($"netboot: serving {ifName} ({address}/{prefix}) {(_o.Proxy ? "as proxy-DHCP" : $"range {_o.Range!.Value.Start}-{_o.Range!.Value.End}")}, {_o.Nodes.Count} nodes, state {state}");
        foreach (var s in store.List()) log.WriteLine($"netboot:   {s.Name,-16} {s.Mac}  {(s.Action == BootAction.Install ? "install" : "local")}");
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        // SIGTERM (systemd, kill) and SIGINT end the service through the finally below, which stops dnsmasq: the
        // default action would end this process at once and leave dnsmasq answering DHCP with nobody in charge.
        void Stop(PosixSignalContext context) { context.Cancel = true; _stoppedBySignal = true; stop.Cancel(); }
        using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        using var onInt = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
        using var onHup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, Stop);
        var exited = dnsmasq.WaitForExitAsync(CancellationToken.None).ContinueWith(_ => stop.Cancel(), TaskScheduler.Default);
        var stderr = RelayDnsmasqLog(dnsmasq, stop.Token);
        try
        {
            // dnsmasq writes its pid file once its sockets are bound; an early exit (port taken, bad config) ends the wait.
            string pidFile = Path.Combine(state, "dnsmasq.pid");
            for (int i = 0; i < 100 && !File.Exists(pidFile) && !dnsmasq.HasExited; i++) await Task.Delay(50, cancellationToken).ConfigureAwait(false);
            if (dnsmasq.HasExited) { await stderr.ConfigureAwait(false); throw new KaDeployException($"dnsmasq exited at start (status {dnsmasq.ExitCode}): {_lastDnsmasqLine}"); }
            _o.Ready?.Invoke();
            await AcceptReportsAsync(listener, store, scripts, stop.Token).ConfigureAwait(false);
        }
        finally
        {
            listener.Stop();
            if (!dnsmasq.HasExited)
            {
                dnsmasq.Kill();
                await dnsmasq.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            }
            await exited.ConfigureAwait(false);
            try { await stderr.ConfigureAwait(false); } catch (OperationCanceledException) { }
            File.Delete(Path.Combine(state, "dnsmasq.pid"));
        }
        if (!cancellationToken.IsCancellationRequested && !_stoppedBySignal)
            throw new KaDeployException($"dnsmasq stopped (status {dnsmasq.ExitCode}): {_lastDnsmasqLine}");
        log.WriteLine("netboot: stopped");
    }

    /// <summary>Refuses an interface that does not exist in this network namespace (before anything is built or started).</summary>
    public static void CheckInterface(string ifName)
    {
        ArgumentNullException.ThrowIfNull(ifName);
        if (ifName.Length == 0 || ifName.Contains('/', StringComparison.Ordinal) || !Directory.Exists($"/sys/class/net/{ifName}"))
            throw new KaDeployException($"interface {ifName} does not exist (ip link shows the interfaces of this network namespace)");
    }

    private volatile string _lastDnsmasqLine = "";
    private volatile bool _stoppedBySignal;

    /// <summary>A service killed hard (SIGKILL, power loss of the session) leaves its dnsmasq; the lock says no service
    /// runs on this interface now, so a dnsmasq still running with this state directory's configuration is stopped.</summary>
    private void StopStaleDnsmasq(string state)
    {
        string pidFile = Path.Combine(state, "dnsmasq.pid");
        if (!File.Exists(pidFile)) return;
        if (int.TryParse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture, out int pid))
        {
            string cmdline = "";
            try { cmdline = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' '); } catch (IOException) { }
            if (cmdline.Contains("dnsmasq", StringComparison.Ordinal) && cmdline.Contains(Path.Combine(state, "dnsmasq.conf"), StringComparison.Ordinal))
            {
                _o.Log.WriteLine($"netboot: stopping dnsmasq (pid {pid}) left by a previous run of this state directory");
                using var stale = Process.GetProcessById(pid);
                stale.Kill();
                stale.WaitForExit(5000);
            }
        }
        File.Delete(pidFile);
    }

    private Process StartDnsmasq(string conf)
    {
        var info = new ProcessStartInfo(ExternalTool.Which("dnsmasq") ?? throw new KaDeployException("dnsmasq not found (apt-get install dnsmasq-base)"))
        {
            RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false,
        };
        foreach (var a in new[] { "--keep-in-foreground", "--log-facility=-", $"--conf-file={conf}" }) info.ArgumentList.Add(a);
        return Process.Start(info) ?? throw new KaDeployException("cannot start dnsmasq");
    }

    private Task RelayDnsmasqLog(Process dnsmasq, CancellationToken ct) => Task.Run(async () =>
    {
        while (await dnsmasq.StandardError.ReadLineAsync(ct).ConfigureAwait(false) is { } line)
        {
            _lastDnsmasqLine = line;
            // "DHCPDISCOVER(br0) 52:54:00:..:.. ignored": a machine that is not in the node list asked.
            if (line.Contains(" ignored", StringComparison.Ordinal) && line.Contains("DHCP", StringComparison.Ordinal))
                _o.Log.WriteLine($"netboot: not in the node list, not answered: {line[(line.IndexOf(')', StringComparison.Ordinal) + 1)..].Replace(" ignored", "", StringComparison.Ordinal).Trim()}");
            else
                _o.Log.WriteLine($"netboot: dnsmasq: {line}");
        }
    }, CancellationToken.None);

    private async Task AcceptReportsAsync(TcpListener listener, NodeStateStore store, BootScripts scripts, CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await listener.AcceptTcpClientAsync(ct).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            _ = Task.Run(() => HandleReportAsync(client, store, scripts, ct), CancellationToken.None);
        }
    }

    private async Task HandleReportAsync(TcpClient client, NodeStateStore store, BootScripts scripts, CancellationToken ct)
    {
        using (client)
        {
            var peer = ((IPEndPoint)client.Client.RemoteEndPoint!).Address.MapToIPv4();
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(TimeSpan.FromSeconds(10));
            var stream = client.GetStream();
            var buffer = new byte[128];
            int n = 0;
            try
            {
                while (n < buffer.Length && Array.IndexOf(buffer, (byte)'\n', 0, n) < 0)
                {
                    int r = await stream.ReadAsync(buffer.AsMemory(n), timeout.Token).ConfigureAwait(false);
                    if (r == 0) break;
                    n += r;
                }
            }
            catch (Exception e) when (e is OperationCanceledException or IOException) { return; }
            string reply = Handle(Encoding.ASCII.GetString(buffer, 0, n).Trim(), peer, store, scripts);
            try { await stream.WriteAsync(Encoding.ASCII.GetBytes(reply + "\n"), timeout.Token).ConfigureAwait(false); }
            catch (Exception e) when (e is OperationCanceledException or IOException) { }
        }
    }

    /// <summary>"installed MAC" from the node itself: the sender's address must belong to that MAC on this link (ARP).</summary>
    internal string Handle(string request, IPAddress peer, NodeStateStore store, BootScripts scripts)
    {
        var f = request.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (f.Length != 2 || f[0] != "installed" || NodeList.NormalizeMac(f[1]) is not { } mac) return "error: expected 'installed MAC'";
        if (!_byMac.TryGetValue(mac, out var node)) { _o.Log.WriteLine($"netboot: report from {peer} for unknown MAC {mac} ignored"); return "error: unknown node"; }
        string? seen = ArpMac(peer, _o.Interface);
        if (seen != mac)
        {
            _o.Log.WriteLine($"netboot: report 'installed {mac}' from {peer} refused: that address is {seen ?? "not in the ARP table"} on {_o.Interface}");
            return "error: address does not belong to that MAC";
        }
        store.Set(node, BootAction.Local, $"installed {DateTimeOffset.UtcNow:yyyy-MM-ddTHH:mm:ssZ} from {peer}", scripts);
        _o.Log.WriteLine($"netboot: {node.Name} ({mac}) install verified; its next network boot boots its disk");
        return "ok";
    }

    internal static string? ArpMac(IPAddress address, string ifName)
    {
        foreach (var line in File.ReadLines("/proc/net/arp").Skip(1))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length >= 6 && f[0] == address.ToString() && f[5] == ifName) return f[3].ToLowerInvariant();
        }
        return null;
    }

    private void PrepareTftp(string tftp)
    {
        foreach (var (file, from) in new[] { ("undionly.kpxe", "undionly.kpxe"), ("ipxe.efi", "ipxe.efi") })
        {
            string source = Path.Combine(_o.IpxeDirectory, from);
            if (!File.Exists(source)) throw new KaDeployException($"{source} not found (apt-get install ipxe)");
            File.Copy(source, Path.Combine(tftp, file), overwrite: true);
        }
        File.Copy(_o.Image.Kernel, Path.Combine(tftp, "vmlinuz"), overwrite: true);
        File.Copy(_o.Image.Initrd, Path.Combine(tftp, "initrd.img"), overwrite: true);
        NodeStateStore.WriteAtomically(Path.Combine(tftp, "boot.ipxe"), BootScripts.Entry);
    }

    /// <summary>The lock that makes this the only service on <paramref name="ifName"/> in this network namespace; held
    /// until the returned stream is disposed (or the process ends: an flock, so a killed service leaves no stale lock).</summary>
    public static FileStream TakeLock(string lockDirectory, string ifName)
    {
        // One service per interface: keyed by the network namespace too, since namespaces reuse interface names.
        string ns = new FileInfo("/proc/self/ns/net").LinkTarget ?? "net";
        string key = new string(ns.Where(char.IsAsciiDigit).ToArray());
        string path = Path.Combine(lockDirectory, $"netboot-{key}-{ifName}.lock");
        try
        {
            Directory.CreateDirectory(lockDirectory);
            var fs = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            fs.SetLength(0);
            fs.Write(Encoding.ASCII.GetBytes(Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n"));
            fs.Flush();
            return fs;
        }
        catch (IOException)
        {
            throw new KaDeployException($"another `ka-deploy netboot serve` is already serving {ifName} (lock {path})");
        }
        catch (UnauthorizedAccessException)
        {
            throw new KaDeployException($"cannot take the lock {path}: permission denied (the boot service runs as root)");
        }
    }

    private static (IPAddress Address, int Prefix) InterfaceAddress(string ifName)
    {
        var (status, stdout, stderr) = ExternalTool.Run("ip", ["-4", "-o", "addr", "show", "dev", ifName]);
        if (status != 0) throw new KaDeployException($"interface {ifName}: {stderr.Trim()}");
        foreach (var line in stdout.Split('\n'))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            int i = Array.IndexOf(f, "inet");
            if (i >= 0 && i + 1 < f.Length && f[i + 1].Split('/') is [var a, var p])
                return (IPAddress.Parse(a), int.Parse(p, CultureInfo.InvariantCulture));
        }
        throw new KaDeployException($"interface {ifName} has no IPv4 address (the boot service answers from it)");
    }

    internal static IPAddress Network(IPAddress address, int prefix)
    {
        uint a = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(address.GetAddressBytes());
        uint mask = prefix == 0 ? 0 : uint.MaxValue << (32 - prefix);
        var bytes = new byte[4];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(bytes, a & mask);
        return new IPAddress(bytes);
    }

    internal static bool SameNetwork(IPAddress a, IPAddress b, int prefix) => Network(a, prefix).Equals(Network(b, prefix));
}
