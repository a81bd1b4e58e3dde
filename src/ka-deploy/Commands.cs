using System.CommandLine;
using System.Net;
using KaDeploy.Protocol;
using KaDeploy.Session;

namespace KaDeploy.Cli;

/// <summary>Options and actions of `server`, `client` and `go`, shared with the compat names. Every option is made by <see cref="Opt"/>.</summary>
internal static class Commands
{
    private const long MinBuffer = 1L << 20, MaxBuffer = 64L << 30;

    public static void AddServerOptions(Command cmd, bool compat)
    {
        var clients = Opt.Int("--clients", "Number of clients to wait for", 1, 100_000, 1, "N", "-n");
        var minClients = Opt.OptionalInt("--min-clients", "With --start-timeout: start with at least this many", 1, 100_000);
        var startTimeout = Opt.OptionalSeconds("--start-timeout", "Seconds to wait for all clients before starting with --min-clients", 0, 86400 * 7);
        var arity = Opt.Int("--arity", "Tree arity; 1 = chain (fastest on a switched network)", 1, 64, 1, "A", "-a");
        var session = Opt.Name("--session", "Session name; clients of another session are refused", "default", "NAME", "-s");
        var port = Opt.Port("--port", "Control port", ProtocolConstants.DefaultControlPort, allowAny: true, "-p");
        var dataPort = Opt.Port("--data-port", "Port the server's own children connect to (0 = any free port)", 0, allowAny: true, "-P");
        var bind = Opt.Address("--bind", "Local address to listen on");
        var source = Opt.ExistingDirectory("--source", "Directory tree to send (default /, with --one-file-system and the usual exclusions)");
        var image = Opt.Path("--image", "Archive (.tar, .tar.zst, .tar.gz) or raw disk image to send", "FILE", "/nonexistent/ka-deploy.img", "file");
        var device = Opt.ReadableFile("--device", "Block device to send raw (zero blocks are skipped)", "DEVICE");
        var exec = Opt.Command("--exec", "Command whose standard output is the payload", "-e");
        var exclude = Opt.Repeated("--exclude", "Path or glob under the source to leave out (repeatable)", "PATH");
        var allFs = Opt.Flag("--all-file-systems", "Descend into other mounted file systems under the source");
        var noDefaultExcludes = Opt.Flag("--no-default-excludes", "With --source /: do not skip /proc, /sys, /dev, /run, /tmp contents");
        var compress = Opt.Checked("--compress", "Wire compression: none, zstd or zstd:LEVEL", "none|zstd[:LEVEL]",
            t => PayloadSelection.ParseCompression(t), "lz4", "none zstd");
        var buffer = Opt.Size("--buffer", "Relay buffer size (1MiB to 64GiB)", MinBuffer, MaxBuffer, "64MiB");
        var digest = Opt.Choice("--digest", "End-to-end check of every copy: frames (the frames' checks chained, no second pass over the data), or a digest of the payload: xxh128, sha256 (comparable with sha256sum), blake3", ["frames", "xxh128", "sha256", "blake3"], "frames");
        var releaseDelay = Opt.Checked("--release-delay", "Pause between releasing waiting clients: tenths of a second as the original (5), or 2s / 300ms",
            "T", t => ParseDelay(t), "soon", null, "-d");
        var report = Opt.OutputFile("--report", "Write the session report as JSON to this file (its directory must exist)");
        var nodes = Opt.ReadableFile("--nodes", "File listing node names or addresses in chain order (one per line)");
        var linkTimeout = Opt.Seconds("--link-timeout", "Seconds every node has to link to its parent", 1, 86400, 60);
        var noDiscovery = Opt.Flag("--no-discovery", "Do not answer UDP session discovery");
        var discoveryPort = Opt.Port("--discovery-port", "UDP port of session discovery", ProtocolConstants.DiscoveryPort, allowAny: false);
        var stall = Opt.Seconds("--stall-timeout", "Seconds a child may hold a full relay buffer back before it is dropped (0 = never)", 0, 86400, 60);
        var keep = new Option<bool>("-l") { Description = "Original's 'keep data for recovery'; always on here (the relay ring retains data)", Hidden = !compat };
        // Repair (issue 8)
        var failureTimeout = Opt.Seconds("--failure-timeout", "Seconds of silence (no heartbeat) after which a node is declared failed and its children re-attached", 0.5, 3600, 3);
        var spoolOpt = Opt.Checked("--spool", "Copy of the produced stream for resumes no relay holds: a directory (whole stream), 'memory' (the last 1 GiB, 512 MiB in a keyed session; the default, but for an uncompressed --image or --device, which is read again instead) or 'none'",
            "DIR|memory|none", t => { if (t is not ("memory" or "none") && !Directory.Exists(t)) throw new KaDeployException($"--spool {t}: no such directory (or say memory or none)"); },
            "/nonexistent/ka-deploy-spool", "directory");
        var okFile = Opt.OutputFile("--ok-file", "Write the names of the nodes that verified their copy, one per line");
        var koFile = Opt.OutputFile("--ko-file", "Write the names of the nodes that failed, one per line");
        var slowAfter = Opt.Seconds("--slow-after", "Seconds a node's own disk may hold its buffer full at under half the tree's speed before it is moved off the tree, to finish from the spool (0 = never)", 0, 3600, 1);
        foreach (var o in new Option[] { failureTimeout, spoolOpt, okFile, koFile, slowAfter }) cmd.Options.Add(o);
        // Security (issue 9)
        var keyFile = Opt.KeyFile("Pre-shared key (ka-deploy keygen FILE; mode 0600): nodes must prove they hold it, the payload is sealed");
        cmd.Options.Add(keyFile);
        var cipher = Opt.Choice("--cipher", "AEAD that seals a keyed session's data: auto (AEGIS-256 where libsodium with AEGIS loads beside ka-deploy, else AES-256-GCM), aegis-256, aegis-128l or aes-256-gcm",
            ["auto", "aegis-256", "aegis-128l", "aes-256-gcm"], "auto");
        cmd.Options.Add(cipher);
        foreach (var o in new Option[] { clients, minClients, startTimeout, arity, session, port, dataPort, bind, source, image, device, exec, exclude,
                     allFs, noDefaultExcludes, compress, buffer, digest, releaseDelay, report, nodes, linkTimeout, noDiscovery, discoveryPort, stall, keep })
            cmd.Options.Add(o);
        var view = OperatorConsole.AddOptions(cmd);
        var installOptions = InstallCommands.AddServerOptions(cmd);
        var raw = Opt.Flag("--raw", "With --image: send the file as a raw disk image even without a partition table or file-system signature");
        cmd.Options.Add(raw);

        cmd.SetAction(async (p, ct) =>
        {
            int n = p.GetValue(clients);
            if (p.GetValue(minClients) is int min && min > n) throw new UsageException($"--min-clients {min} is more than --clients {n}");
            using var console = new OperatorConsole(view.Read(p), "ka-deploy server");
            var log = console.Log;
            using var key = Opt.LoadKey(p.GetValue(keyFile));
            var installed = await InstallCommands.ServerSourceAsync(p, installOptions, p.GetValue(session)!, p.GetValue(nodes), p.GetValue(exclude) ?? [], log, ct,
                DigestAlgorithms.Parse(p.GetValue(digest)!));
            if (installed.ExitCode is { } dryRunExit) return dryRunExit;
            var (payload, preCompressed) = installed.Source is { } installSource ? (installSource, false) : PayloadSelection.ServerSource(p.GetValue(source), p.GetValue(image), p.GetValue(device), p.GetValue(exec),
                !p.GetValue(allFs), p.GetValue(exclude) ?? [], !p.GetValue(noDefaultExcludes), log, raw: p.GetValue(raw));
            var (compression, level) = PayloadSelection.ParseCompression(p.GetValue(compress));
            if (preCompressed) compression = WireCompression.Zstd;
            var options = new ServerOptions
            {
                Source = payload, Clients = n, MinClients = p.GetValue(minClients) ?? n,
                StartTimeout = p.GetValue(startTimeout) is { } st ? TimeSpan.FromSeconds(st) : null,
                Arity = p.GetValue(arity), Session = p.GetValue(session)!, ControlPort = p.GetValue(port), DataPort = p.GetValue(dataPort),
                Bind = p.GetValue(bind) ?? IPAddress.Any, Discovery = !p.GetValue(noDiscovery), DiscoveryPort = p.GetValue(discoveryPort),
                Compression = compression, CompressionLevel = level, SourceIsZstd = preCompressed, Digest = DigestAlgorithms.Parse(p.GetValue(digest)!),
                BufferBytes = p.GetValue(buffer), ReleaseDelay = ParseDelay(p.GetValue(releaseDelay)),
                NodeOrder = p.GetValue(nodes) is { } file ? ReadNodes(file) : null, LinkTimeout = TimeSpan.FromSeconds(p.GetValue(linkTimeout)),
                StallTimeout = TimeSpan.FromSeconds(p.GetValue(stall)),
                Log = log, ProgressOnTerminal = null, // the operator console draws the live view from snapshots
                FailureTimeout = TimeSpan.FromSeconds(p.GetValue(failureTimeout)),
                SlowNodeAfter = TimeSpan.FromSeconds(p.GetValue(slowAfter)),
                NoSpool = p.GetValue(spoolOpt) == "none",
                SpoolRereadsSource = p.GetValue(spoolOpt) != "memory",
                SpoolDirectory = p.GetValue(spoolOpt) is null or "none" or "memory" ? null : p.GetValue(spoolOpt),
                Key = key,
                Cipher = p.GetValue(cipher) switch
                {
                    "aegis-256" => KaDeploy.Security.StreamCipherKind.Aegis256,
                    "aegis-128l" => KaDeploy.Security.StreamCipherKind.Aegis128L,
                    "aes-256-gcm" => KaDeploy.Security.StreamCipherKind.Aes256Gcm,
                    _ => null,
                },
            };
            Opt.SayKey(key, p.GetValue(keyFile), log, "ka-deploy server");
            await using var server = new DeployServer(options);
            var result = await console.RunServerAsync(server, ct, installed.Parts is { } partLog ? partLog.Snapshot : null);
            if (installed.Parts is { } parts) KaDeploy.Reporting.PartReport.AddTo(result, parts.Snapshot());
            console.Summary(result);
            if (p.GetValue(report) is { } reportPath) result.WriteJson(reportPath);
            if (p.GetValue(okFile) is { } ok) KaDeploy.Reporting.SessionReport.WriteNames(ok, result.Succeeded);
            if (p.GetValue(koFile) is { } ko) KaDeploy.Reporting.SessionReport.WriteNames(ko, result.Failed.Select(f => f.Name));
            if (!result.Success) console.Error($"ka-deploy server: {result.Message}");
            return result.Success ? 0 : 1;
        });
    }

    public static void AddClientOptions(Command cmd, bool compat)
    {
        var server = compat
            ? Opt.HostPort("--server", "Server HOST[:PORT]", "-h")
            : Opt.HostPort("--server", "Server HOST[:PORT] (or find it by --session)");
        var session = Opt.Name("--session", "Session name (found by UDP broadcast when --server is not given)", "default", "NAME", "-s");
        var discovery = Opt.Address("--discovery-address", "Where to broadcast the session discovery", "255.255.255.255");
        var discoveryPort = Opt.Port("--discovery-port", "UDP port of session discovery", ProtocolConstants.DiscoveryPort, allowAny: false);
        var bind = Opt.Address("--bind", "Local address for the data port and outgoing links");
        var dataPort = Opt.Port("--data-port", "Port this node's children connect to (0 = any free port)", 0, allowAny: true, "-P");
        var target = Opt.Path("--target", "Directory to extract a tree into, or file to write an image to", "PATH", "/nonexistent/ka-deploy/target", "file");
        var force = Opt.Flag("--force", "Extract into a target directory that is not empty, or overwrite a target file");
        var device = Opt.Path("--device", "Block device to write a disk image or raw stream to", "DEVICE", "/nonexistent/ka-deploy-device", "file");
        var exec = Opt.Command("--exec", "Command that reads the payload on standard input", "-e");
        var wait = Opt.Flag("--wait-release", "Exit only when the server releases this node", "-w");
        var buffer = Opt.Size("--buffer", "Relay buffer size (1MiB to 64GiB)", MinBuffer, MaxBuffer, "64MiB");
        var connectTimeout = Opt.Seconds("--connect-timeout", "Seconds to keep looking for (discovery) and trying to reach the server", 1, 86400 * 7, 600);
        var nodeName = Opt.Name("--name", "Node name reported to the server (default: host name)", null);
        var assumeZeroed = Opt.Flag("--assume-zeroed", "Device reads back zeros already: do not zero the blocks the image leaves out");
        var go = Opt.Flag("--go", "Tell a waiting server to start with the clients it has, then exit", "-g");
        var stall = Opt.Seconds("--stall-timeout", "Seconds a child or the local disk may hold a full relay buffer back before it is given up (0 = never)", 0, 86400, 60);
        foreach (var o in new Option[] { server, session, discovery, discoveryPort, bind, dataPort, target, force, device, exec, wait, buffer, connectTimeout, nodeName, assumeZeroed, go, stall })
            cmd.Options.Add(o);
        var view = OperatorConsole.AddOptions(cmd, events: false);
        var installOptions = InstallCommands.AddClientOptions(cmd);
        // Repair (issue 8)
        var clientFailureTimeout = Opt.Seconds("--failure-timeout", "Seconds of silence from the server after which it is taken as lost", 0.5, 3600, 3);
        var retain = Opt.Size("--retain", "Kept in the relay buffer behind the slowest child, for orphans that resume from this node", 0, MaxBuffer, "16MiB");
        cmd.Options.Add(clientFailureTimeout);
        cmd.Options.Add(retain);
        // Security (issue 9)
        var keyFile = Opt.KeyFile("Pre-shared key of the session (or /proc/cmdline for ka.key= on a network-booted node): only a server and parents holding it are followed");
        cmd.Options.Add(keyFile);

        cmd.SetAction(async (p, ct) =>
        {
            using var console = new OperatorConsole(view.Read(p), "ka-deploy client");
            var log = console.Log;
            using var key = Opt.LoadKey(p.GetValue(keyFile));
            var common = new ClientOptions
            {
                Server = p.GetValue(server), Session = p.GetValue(session)!, DiscoveryAddress = p.GetValue(discovery)!, DiscoveryPort = p.GetValue(discoveryPort),
                Bind = p.GetValue(bind), DataPort = p.GetValue(dataPort), Log = log,
                SinkFactory = p.GetValue(go) ? _ => throw new InvalidOperationException()
                    : InstallCommands.ClientSinks(p, installOptions, p.GetValue(nodeName) ?? Environment.MachineName, log)
                      ?? PayloadSelection.ClientSinks(p.GetValue(target), p.GetValue(device), p.GetValue(exec), p.GetValue(force), p.GetValue(assumeZeroed), log),
                BufferBytes = p.GetValue(buffer), WaitRelease = p.GetValue(wait),
                ConnectTimeout = TimeSpan.FromSeconds(p.GetValue(connectTimeout)), NodeName = p.GetValue(nodeName) ?? Environment.MachineName,
                StallTimeout = TimeSpan.FromSeconds(p.GetValue(stall)),
                ProgressOnTerminal = console.ClientProgress,
                FailureTimeout = TimeSpan.FromSeconds(p.GetValue(clientFailureTimeout)),
                RetainBytes = p.GetValue(retain),
                IncompleteMarkerTarget = p.GetValue(target),
                Key = key,
            };
            if (p.GetValue(go))
            {
                console.Error("ka-deploy go: " + await DeployClient.SendGoAsync(common, ct));
                return 0;
            }
            Opt.SayKey(key, p.GetValue(keyFile), log, "ka-deploy client");
            var result = await new DeployClient(common).RunAsync(ct);
            return await InstallCommands.AfterClientAsync(p, installOptions, result.Verified, log);
        });
    }

    public static Command GoCommand()
    {
        var cmd = new Command("go", "Tell a waiting server to start now with the clients it has.");
        var server = Opt.HostPort("--server", "Server HOST[:PORT] (or find it by --session)");
        var session = Opt.Name("--session", "Session name", "default", "NAME", "-s");
        var discovery = Opt.Address("--discovery-address", "Where to broadcast the session discovery", "255.255.255.255");
        var discoveryPort = Opt.Port("--discovery-port", "UDP port of session discovery", ProtocolConstants.DiscoveryPort, allowAny: false);
        var timeout = Opt.Seconds("--connect-timeout", "Seconds to keep looking for the server", 1, 3600, 10);
        var keyFile = Opt.KeyFile("Pre-shared key of the session, when the server has one");
        foreach (var o in new Option[] { server, session, discovery, discoveryPort, timeout, keyFile }) cmd.Options.Add(o);
        cmd.SetAction(async (p, ct) =>
        {
            using var key = Opt.LoadKey(p.GetValue(keyFile));
            var options = new ClientOptions
            {
                Server = p.GetValue(server), Session = p.GetValue(session)!, DiscoveryAddress = p.GetValue(discovery)!, DiscoveryPort = p.GetValue(discoveryPort),
                ConnectTimeout = TimeSpan.FromSeconds(p.GetValue(timeout)),
                SinkFactory = _ => throw new InvalidOperationException(), Log = Console.Error, Key = key,
            };
            Console.Error.WriteLine("ka-deploy go: " + await DeployClient.SendGoAsync(options, ct));
            return 0;
        });
        return cmd;
    }

    /// <summary>Plain numbers are tenths of a second (the original's -d); "2s", "300ms" are durations.</summary>
    internal static TimeSpan ParseDelay(string? text)
    {
        if (string.IsNullOrEmpty(text)) return TimeSpan.Zero;
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        var style = System.Globalization.NumberStyles.Float;
        TimeSpan? t = null;
        if (text.EndsWith("ms", StringComparison.Ordinal) && double.TryParse(text[..^2], style, inv, out double ms)) t = TimeSpan.FromMilliseconds(ms);
        else if (text.EndsWith('s') && double.TryParse(text[..^1], style, inv, out double s)) t = TimeSpan.FromSeconds(s);
        else if (double.TryParse(text, style, inv, out double tenths)) t = TimeSpan.FromSeconds(tenths / 10);
        if (t is { } d && d >= TimeSpan.Zero && d <= TimeSpan.FromHours(1)) return d;
        throw new KaDeployException($"--release-delay '{text}': expected tenths of a second (5) or a duration (2s, 300ms), at most an hour");
    }

    private static IReadOnlyList<string> ReadNodes(string file)
    {
        try
        {
            // The first field is the node's name (the node list's other fields are for --install).
            return File.ReadAllLines(file).Select(l => l.Split('#')[0].Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? "")
                .Where(l => l.Length > 0).ToArray();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"--nodes {file}: {e.Message}");
        }
    }
}

/// <summary>A mistake in the command line found by the action (two options that contradict): exit 2, as a parse error.</summary>
internal sealed class UsageException(string message) : KaDeployException(message);
