using System.CommandLine;
using System.Net;
using KaDeploy.Payloads.Tar;
using KaDeploy.Protocol;
using KaDeploy.Session;
using KaDeploy.Verification;

namespace KaDeploy.Cli;

/// <summary>
/// `ka-deploy demo`: a whole session on this machine. A server and N clients on loopback, each client
/// on its own 127.0.0.x address with its own target directory, cloning a generated sample tree
/// (every entry type the tool carries) or --source DIR, then every copy compared to the source
/// entry by entry. Real sockets, real tar, real disks; nothing leaves the machine.
/// </summary>
internal static class Demo
{
    public static Command Command()
    {
        var cmd = new Command("demo", "Clone a sample tree (or --source DIR) to N local clients over loopback, verify every copy, print the summary.");
        var clients = new Option<int>("--clients", "-n") { Description = "Number of local clients", DefaultValueFactory = _ => 5 };
        var source = new Option<string?>("--source") { Description = "Directory to clone instead of the generated sample tree" };
        var arity = new Option<int>("--arity", "-a") { Description = "Tree arity; 1 = chain", DefaultValueFactory = _ => 1 };
        var compress = new Option<string?>("--compress") { Description = "Wire compression: none, zstd or zstd:LEVEL" };
        var keep = new Option<bool>("--keep") { Description = "Keep the work directory (targets) for inspection" };
        var report = new Option<string?>("--report") { Description = "Write the session report as JSON to this file" };
        foreach (var o in new Option[] { clients, source, arity, compress, keep, report }) cmd.Options.Add(o);
        cmd.SetAction((p, ct) => RunAsync(p.GetValue(clients), p.GetValue(source), p.GetValue(arity), p.GetValue(compress), p.GetValue(keep), p.GetValue(report), ct));
        return cmd;
    }

    private static async Task<int> RunAsync(int clients, string? source, int arity, string? compress, bool keep, string? reportPath, CancellationToken ct)
    {
        if (clients is < 1 or > 200) throw new KaDeployException("--clients must be between 1 and 200 for the demo");
        var (compression, level) = PayloadSelection.ParseCompression(compress);
        // /var/tmp rather than /tmp: it is a disk file system here, where xattrs and holes behave as on a node's disk.
        string work = Path.Combine(Directory.Exists("/var/tmp") ? "/var/tmp" : Path.GetTempPath(), $"ka-deploy-demo-{Environment.ProcessId}");
        Directory.CreateDirectory(work);
        var log = TextWriter.Synchronized(Console.Error);
        try
        {
            string root = source is null ? Path.Combine(work, "source") : Path.GetFullPath(source);
            if (source is null)
            {
                var built = SampleTree.Create(root);
                log.WriteLine($"demo: generated a sample tree in {root} ({SampleTree.Describe(built)}every entry type)");
            }
            else if (!Directory.Exists(root)) throw new KaDeployException($"--source {root} is not a directory");

            var tar = new TarTreeSource(new TarTreeSourceOptions
            {
                Root = root, OneFileSystem = true,
                Excludes = root == "/" ? TarTreeSource.DefaultExclusions(root, work) : [],
                Warn = w => log.WriteLine("demo: warning: " + w),
            });
            await using var server = new DeployServer(new ServerOptions
            {
                Source = tar, Clients = clients, Arity = arity, Compression = compression, CompressionLevel = level,
                Bind = IPAddress.Loopback, ControlPort = 0, Discovery = false, Session = "demo", Log = log,
                BufferBytes = 16L << 20,
            });
            var serverRun = server.RunAsync(ct);
            var targets = Enumerable.Range(1, clients).Select(i => Path.Combine(work, $"node{i}")).ToArray();
            var runs = targets.Select((target, i) =>
            {
                var sink = new TarTreeSink(new TarTreeSinkOptions { Target = target, Warn = w => log.WriteLine($"demo node{i + 1}: warning: {w}") });
                sink.EnsureTargetUsable();
                return new DeployClient(new ClientOptions
                {
                    Server = $"127.0.0.1:{server.ControlPort}", Session = "demo",
                    Bind = IPAddress.Parse($"127.0.{(i + 10) / 250}.{(i + 10) % 250 + 1}"),
                    SinkFactory = _ => sink, BufferBytes = 16L << 20, NodeName = $"node{i + 1}", Log = log,
                }).RunAsync(ct);
            }).ToArray();
            var results = await Task.WhenAll(runs);
            var report = await serverRun;
            Console.Out.Write(report.FormatTable());
            if (reportPath is not null) report.WriteJson(reportPath);

            bool identical = true;
            var excludes = root == "/" ? TarTreeSource.DefaultExclusions(root, work) : [];
            for (int i = 0; i < targets.Length; i++)
            {
                if (!results[i].Verified) { identical = false; continue; }
                var diffs = TreeComparer.Compare(root, targets[i], new TreeComparisonOptions { Excludes = excludes });
                if (diffs.Count == 0) Console.Out.WriteLine($"node{i + 1}: {targets[i]} is identical to {root} (content, type, mode, owner, mtime, links, xattrs, holes)");
                else
                {
                    identical = false;
                    Console.Out.WriteLine($"node{i + 1}: {diffs.Count} difference(s) from {root}:");
                    foreach (var d in diffs.Take(20)) Console.Out.WriteLine("  " + d);
                }
            }
            bool ok = report.Success && identical;
            Console.Out.WriteLine(ok ? $"demo: all {clients} copies verified and identical" : "demo: FAILED");
            if (keep) Console.Out.WriteLine($"demo: work directory kept at {work}");
            return ok ? 0 : 1;
        }
        finally
        {
            if (!keep) DeleteTree(work);
        }
    }

    private static void DeleteTree(string path)
    {
        try { Directory.Delete(path, recursive: true); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"demo: could not remove {path}: {e.Message}");
        }
    }
}
