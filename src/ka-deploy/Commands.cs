using System.CommandLine;
using System.Net;
using KaDeploy.Protocol;
using KaDeploy.Session;

namespace KaDeploy.Cli;

/// <summary>Options and actions of `server`, `client` and `go`, shared with the compat names.</summary>
internal static class Commands
{
    public static void AddServerOptions(Command cmd, bool compat)
    {
        var clients = new Option<int>("--clients", "-n") { Description = "Number of clients to wait for", DefaultValueFactory = _ => 1 };
        var minClients = new Option<int?>("--min-clients") { Description = "With --start-timeout: start with at least this many" };
        var startTimeout = new Option<double?>("--start-timeout") { Description = "Seconds to wait for all clients before starting with --min-clients" };
        var arity = new Option<int>("--arity", "-a") { Description = "Tree arity; 1 = chain (fastest on a switched network)", DefaultValueFactory = _ => 1 };
        var session = new Option<string>("--session", "-s") { Description = "Session name; clients of another session are refused", DefaultValueFactory = _ => "default" };
        var port = new Option<int>("--port", "-p") { Description = "Control port", DefaultValueFactory = _ => ProtocolConstants.DefaultControlPort };
        var dataPort = new Option<int>("--data-port", "-P") { Description = "Port the server's own children connect to (0 = any free port)" };
        var bind = new Option<string?>("--bind") { Description = "Local address to listen on" };
        var source = new Option<string?>("--source") { Description = "Directory tree to send (default /, with --one-file-system and the usual exclusions)" };
        var image = new Option<string?>("--image") { Description = "Archive (.tar, .tar.zst, .tar.gz) or raw disk image to send" };
        var device = new Option<string?>("--device") { Description = "Block device to send raw (zero blocks are skipped)" };
        var exec = new Option<string?>("--exec", "-e") { Description = "Command whose standard output is the payload" };
        var exclude = new Option<string[]>("--exclude") { Description = "Path or glob under the source to leave out (repeatable)", AllowMultipleArgumentsPerToken = false };
        var allFs = new Option<bool>("--all-file-systems") { Description = "Descend into other mounted file systems under the source" };
        var noDefaultExcludes = new Option<bool>("--no-default-excludes") { Description = "With --source /: do not skip /proc, /sys, /dev, /run, /tmp contents" };
        var compress = new Option<string?>("--compress") { Description = "Wire compression: none, zstd or zstd:LEVEL" };
        var buffer = new Option<string>("--buffer") { Description = "Relay buffer size", DefaultValueFactory = _ => "64MiB" };
        var releaseDelay = new Option<string?>("--release-delay", "-d") { Description = "Pause between releasing waiting clients: tenths of a second as the original (5), or 2s / 300ms" };
        var report = new Option<string?>("--report") { Description = "Write the session report as JSON to this file" };
        var nodes = new Option<string?>("--nodes") { Description = "File listing node names or addresses in chain order (one per line)" };
        var linkTimeout = new Option<double>("--link-timeout") { Description = "Seconds every node has to link to its parent", DefaultValueFactory = _ => 60 };
        var noDiscovery = new Option<bool>("--no-discovery") { Description = "Do not answer UDP session discovery" };
        var stall = new Option<double>("--stall-timeout") { Description = "Seconds a child may hold a full relay buffer back before it is dropped (0 = never)", DefaultValueFactory = _ => 60 };
        var keep = new Option<bool>("-l") { Description = "Original's 'keep data for recovery'; always on here (the relay ring retains data)", Hidden = !compat };
        var noProgress = new Option<bool>("--no-progress") { Description = "No live progress" };
        // Repair (issue 8)
        var failureTimeout = new Option<double>("--failure-timeout") { Description = "Seconds of silence (no heartbeat) after which a node is declared failed and its children re-attached", DefaultValueFactory = _ => 3 };
        var spoolOpt = new Option<string>("--spool") { Description = "Copy of the produced stream for resumes no relay holds: a directory (whole stream), 'memory' (last 1 GiB) or 'none'", DefaultValueFactory = _ => "memory" };
        var okFile = new Option<string?>("--ok-file") { Description = "Write the names of the nodes that verified their copy, one per line" };
        var koFile = new Option<string?>("--ko-file") { Description = "Write the names of the nodes that failed, one per line" };
        foreach (var o in new Option[] { failureTimeout, spoolOpt, okFile, koFile }) cmd.Options.Add(o);
        foreach (var o in new Option[] { clients, minClients, startTimeout, arity, session, port, dataPort, bind, source, image, device, exec, exclude,
                     allFs, noDefaultExcludes, compress, buffer, releaseDelay, report, nodes, linkTimeout, noDiscovery, stall, keep, noProgress })
            cmd.Options.Add(o);

        cmd.SetAction(async (p, ct) =>
        {
            var log = Console.Error;
            var (payload, preCompressed) = PayloadSelection.ServerSource(p.GetValue(source), p.GetValue(image), p.GetValue(device), p.GetValue(exec),
                !p.GetValue(allFs), p.GetValue(exclude) ?? [], !p.GetValue(noDefaultExcludes), log);
            var (compression, level) = PayloadSelection.ParseCompression(p.GetValue(compress));
            if (preCompressed) compression = WireCompression.Zstd;
            int n = p.GetValue(clients);
            var options = new ServerOptions
            {
                Source = payload, Clients = n, MinClients = p.GetValue(minClients) ?? n,
                StartTimeout = p.GetValue(startTimeout) is { } st ? TimeSpan.FromSeconds(st) : null,
                Arity = p.GetValue(arity), Session = p.GetValue(session)!, ControlPort = p.GetValue(port), DataPort = p.GetValue(dataPort),
                Bind = ParseAddress(p.GetValue(bind)) ?? IPAddress.Any, Discovery = !p.GetValue(noDiscovery),
                Compression = compression, CompressionLevel = level, SourceIsZstd = preCompressed,
                BufferBytes = PayloadSelection.ParseSize(p.GetValue(buffer)!), ReleaseDelay = ParseDelay(p.GetValue(releaseDelay)),
                NodeOrder = p.GetValue(nodes) is { } file ? ReadNodes(file) : null, LinkTimeout = TimeSpan.FromSeconds(p.GetValue(linkTimeout)),
                StallTimeout = TimeSpan.FromSeconds(p.GetValue(stall)),
                Log = log, ProgressOnTerminal = p.GetValue(noProgress) ? null : !Console.IsErrorRedirected,
                FailureTimeout = TimeSpan.FromSeconds(p.GetValue(failureTimeout)),
                NoSpool = p.GetValue(spoolOpt) == "none",
                SpoolDirectory = p.GetValue(spoolOpt) is "none" or "memory" ? null : p.GetValue(spoolOpt),
            };
            await using var server = new DeployServer(options);
            var result = await server.RunAsync(ct);
            Console.Out.Write(result.FormatTable());
            if (p.GetValue(report) is { } reportPath) result.WriteJson(reportPath);
            if (p.GetValue(okFile) is { } ok) KaDeploy.Reporting.SessionReport.WriteNames(ok, result.Succeeded);
            if (p.GetValue(koFile) is { } ko) KaDeploy.Reporting.SessionReport.WriteNames(ko, result.Failed.Select(f => f.Name));
            if (!result.Success) log.WriteLine($"ka-deploy server: {result.Message}");
            return result.Success ? 0 : 1;
        });
    }

    public static void AddClientOptions(Command cmd, bool compat)
    {
        var server = compat
            ? new Option<string?>("--server", "-h") { Description = "Server HOST[:PORT]" }
            : new Option<string?>("--server") { Description = "Server HOST[:PORT] (or find it by --session)" };
        var session = new Option<string>("--session", "-s") { Description = "Session name (found by UDP broadcast when --server is not given)", DefaultValueFactory = _ => "default" };
        var discovery = new Option<string>("--discovery-address") { Description = "Where to broadcast the session discovery", DefaultValueFactory = _ => "255.255.255.255" };
        var bind = new Option<string?>("--bind") { Description = "Local address for the data port and outgoing links" };
        var dataPort = new Option<int>("--data-port", "-P") { Description = "Port this node's children connect to (0 = any free port)" };
        var target = new Option<string?>("--target") { Description = "Directory to extract a tree into, or file to write an image to" };
        var force = new Option<bool>("--force") { Description = "Extract into a target that is not empty" };
        var device = new Option<string?>("--device") { Description = "Block device to write a disk image or raw stream to" };
        var exec = new Option<string?>("--exec", "-e") { Description = "Command that reads the payload on standard input" };
        var wait = new Option<bool>("--wait-release", "-w") { Description = "Exit only when the server releases this node" };
        var buffer = new Option<string>("--buffer") { Description = "Relay buffer size", DefaultValueFactory = _ => "64MiB" };
        var connectTimeout = new Option<double>("--connect-timeout") { Description = "Seconds to keep trying to reach the server", DefaultValueFactory = _ => 600 };
        var nodeName = new Option<string?>("--name") { Description = "Node name reported to the server (default: host name)" };
        var assumeZeroed = new Option<bool>("--assume-zeroed") { Description = "Device reads back zeros already: do not zero the blocks the image leaves out" };
        var go = new Option<bool>("--go", "-g") { Description = "Tell a waiting server to start with the clients it has, then exit" };
        var stall = new Option<double>("--stall-timeout") { Description = "Seconds a child or the local disk may hold a full relay buffer back before it is given up (0 = never)", DefaultValueFactory = _ => 60 };
        var noProgress = new Option<bool>("--no-progress") { Description = "No live progress" };
        foreach (var o in new Option[] { server, session, discovery, bind, dataPort, target, force, device, exec, wait, buffer, connectTimeout, nodeName, assumeZeroed, go, stall, noProgress })
            cmd.Options.Add(o);
        // Repair (issue 8)
        var clientFailureTimeout = new Option<double>("--failure-timeout") { Description = "Seconds of silence from the server after which it is taken as lost", DefaultValueFactory = _ => 3 };
        var retain = new Option<string>("--retain") { Description = "Kept in the relay buffer behind the slowest child, for orphans that resume from this node", DefaultValueFactory = _ => "16MiB" };
        cmd.Options.Add(clientFailureTimeout);
        cmd.Options.Add(retain);

        cmd.SetAction(async (p, ct) =>
        {
            var log = Console.Error;
            var common = new ClientOptions
            {
                Server = p.GetValue(server), Session = p.GetValue(session)!, DiscoveryAddress = ParseAddress(p.GetValue(discovery))!,
                Bind = ParseAddress(p.GetValue(bind)), DataPort = p.GetValue(dataPort), Log = log,
                SinkFactory = p.GetValue(go) ? _ => throw new InvalidOperationException()
                    : PayloadSelection.ClientSinks(p.GetValue(target), p.GetValue(device), p.GetValue(exec), p.GetValue(force), p.GetValue(assumeZeroed), log),
                BufferBytes = PayloadSelection.ParseSize(p.GetValue(buffer)!), WaitRelease = p.GetValue(wait),
                ConnectTimeout = TimeSpan.FromSeconds(p.GetValue(connectTimeout)), NodeName = p.GetValue(nodeName) ?? Environment.MachineName,
                StallTimeout = TimeSpan.FromSeconds(p.GetValue(stall)),
                ProgressOnTerminal = p.GetValue(noProgress) ? null : !Console.IsErrorRedirected,
                FailureTimeout = TimeSpan.FromSeconds(p.GetValue(clientFailureTimeout)),
                RetainBytes = PayloadSelection.ParseSize(p.GetValue(retain)!),
                IncompleteMarkerTarget = p.GetValue(target),
            };
            if (p.GetValue(go))
            {
                log.WriteLine("ka-deploy go: " + await DeployClient.SendGoAsync(common, ct));
                return 0;
            }
            var result = await new DeployClient(common).RunAsync(ct);
            return result.Verified ? 0 : 1;
        });
    }

    public static Command GoCommand()
    {
        var cmd = new Command("go", "Tell a waiting server to start now with the clients it has.");
        var server = new Option<string?>("--server") { Description = "Server HOST[:PORT] (or find it by --session)" };
        var session = new Option<string>("--session", "-s") { Description = "Session name", DefaultValueFactory = _ => "default" };
        var discovery = new Option<string>("--discovery-address") { Description = "Where to broadcast the session discovery", DefaultValueFactory = _ => "255.255.255.255" };
        cmd.Options.Add(server);
        cmd.Options.Add(session);
        cmd.Options.Add(discovery);
        cmd.SetAction(async (p, ct) =>
        {
            var options = new ClientOptions
            {
                Server = p.GetValue(server), Session = p.GetValue(session)!, DiscoveryAddress = ParseAddress(p.GetValue(discovery))!,
                SinkFactory = _ => throw new InvalidOperationException(), Log = Console.Error,
            };
            Console.Error.WriteLine("ka-deploy go: " + await DeployClient.SendGoAsync(options, ct));
            return 0;
        });
        return cmd;
    }

    private static IPAddress? ParseAddress(string? text) =>
        text is null ? null
        : IPAddress.TryParse(text, out var a) ? a
        : throw new KaDeployException($"'{text}' is not an IP address");

    /// <summary>Plain numbers are tenths of a second (the original's -d); "2s", "300ms" are durations.</summary>
    internal static TimeSpan ParseDelay(string? text)
    {
        if (string.IsNullOrEmpty(text)) return TimeSpan.Zero;
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        if (text.EndsWith("ms", StringComparison.Ordinal) && double.TryParse(text[..^2], inv, out double ms)) return TimeSpan.FromMilliseconds(ms);
        if (text.EndsWith('s') && double.TryParse(text[..^1], inv, out double s)) return TimeSpan.FromSeconds(s);
        if (double.TryParse(text, inv, out double tenths) && tenths >= 0) return TimeSpan.FromSeconds(tenths / 10);
        throw new KaDeployException($"--release-delay '{text}': expected tenths of a second (5) or a duration (2s, 300ms)");
    }

    private static IReadOnlyList<string> ReadNodes(string file)
    {
        try
        {
            return File.ReadAllLines(file).Select(l => l.Split('#')[0].Trim()).Where(l => l.Length > 0).ToArray();
        }
        catch (IOException e)
        {
            throw new KaDeployException($"--nodes {file}: {e.Message}");
        }
    }
}
