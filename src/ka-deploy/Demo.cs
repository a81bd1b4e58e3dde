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
        var clients = Opt.Int("--clients", "Number of local clients", 1, 200, 5, "N", "-n");
        var source = Opt.ExistingDirectory("--source", "Directory to clone instead of the generated sample tree");
        var arity = Opt.Int("--arity", "Tree arity; 1 = chain", 1, 64, 1, "A", "-a");
        var compress = Opt.Checked("--compress", "Wire compression: none, zstd or zstd:LEVEL", "none|zstd[:LEVEL]",
            t => PayloadSelection.ParseCompression(t), "lz4", "none zstd");
        var keep = Opt.Flag("--keep", "Keep the work directory (targets) for inspection");
        var report = Opt.OutputFile("--report", "Write the session report as JSON to this file (its directory must exist)");
        var throttle = Opt.Size("--throttle", "Limit each node's disk to this many bytes a second (to watch a session; 0 = no limit)", 0, 1L << 40, "0");
        var failNode = Opt.OptionalInt("--fail-node", "Make node N's disk fail part way through (to see a failure in the view and the report)", 1, 200);
        var extra = Opt.Size("--extra-data", "Add a file of this many random bytes to the generated sample tree (a longer session)", 0, 16L << 30, "0");
        foreach (var o in new Option[] { clients, source, arity, compress, keep, report, throttle, failNode, extra }) cmd.Options.Add(o);
        var view = OperatorConsole.AddOptions(cmd);
        cmd.SetAction((p, ct) => RunAsync(new DemoChoice(p.GetValue(clients), p.GetValue(source), p.GetValue(arity), p.GetValue(compress), p.GetValue(keep),
            p.GetValue(report), p.GetValue(throttle), p.GetValue(failNode), p.GetValue(extra), view.Read(p)), ct));
        return cmd;
    }

    private sealed record DemoChoice(int Clients, string? Source, int Arity, string? Compress, bool Keep, string? Report, long Throttle, int? FailNode,
        long ExtraData, ViewChoice View);

    private static async Task<int> RunAsync(DemoChoice choice, CancellationToken ct)
    {
        var (clients, source, arity, compress, keep, reportPath) = (choice.Clients, choice.Source, choice.Arity, choice.Compress, choice.Keep, choice.Report);
        if (choice.FailNode > clients) throw new UsageException($"--fail-node {choice.FailNode}: there are only {clients} node(s)");
        var (compression, level) = PayloadSelection.ParseCompression(compress);
        // Every node's sink blocks a pool thread while it writes (as a real node's does, in its own process); N nodes in
        // one process need N of them at once, or the pool's slow thread injection stalls progress reports and the view.
        ThreadPool.GetMinThreads(out int workers, out int io);
        ThreadPool.SetMinThreads(Math.Max(workers, 4 * clients + 8), io);
        // /var/tmp rather than /tmp: it is a disk file system here, where xattrs and holes behave as on a node's disk.
        string work = Path.Combine(Directory.Exists("/var/tmp") ? "/var/tmp" : Path.GetTempPath(), $"ka-deploy-demo-{Environment.ProcessId}");
        Directory.CreateDirectory(work);
        using var console = new OperatorConsole(choice.View, "demo");
        var log = console.Log;
        try
        {
            string root = source is null ? Path.Combine(work, "source") : Path.GetFullPath(source);
            if (source is null)
            {
                var built = SampleTree.Create(root);
                log.WriteLine($"demo: generated a sample tree in {root} ({SampleTree.Describe(built)}every entry type)");
                if (choice.ExtraData > 0) DemoSinks.WriteRandomFile(Path.Combine(root, "extra-data.bin"), choice.ExtraData);
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
            var serverRun = console.RunServerAsync(server, ct);
            var targets = Enumerable.Range(1, clients).Select(i => Path.Combine(work, $"node{i}")).ToArray();
            var runs = targets.Select((target, i) =>
            {
                var sink = new TarTreeSink(new TarTreeSinkOptions { Target = target, Warn = w => log.WriteLine($"demo node{i + 1}: warning: {w}") });
                sink.EnsureTargetUsable();
                return new DeployClient(new ClientOptions
                {
                    Server = $"127.0.0.1:{server.ControlPort}", Session = "demo",
                    Bind = IPAddress.Parse($"127.0.{(i + 10) / 250}.{(i + 10) % 250 + 1}"),
                    SinkFactory = plan => DemoSinks.Wrap(sink, choice.Throttle, choice.FailNode == i + 1 ? Math.Max(1, plan.EstimatedLength * 2 / 5) : null),
                    BufferBytes = 16L << 20, NodeName = $"node{i + 1}", Log = log,
                }).RunAsync(ct);
            }).ToArray();
            var results = await Task.WhenAll(runs);
            var report = await serverRun;
            console.Summary(report);
            if (reportPath is not null) report.WriteJson(reportPath);

            // With --events json, standard output carries only the JSON lines; the demo's own verdict goes to standard error.
            var say = choice.View.EventsJson ? Console.Error : Console.Out;
            bool identical = true;
            var excludes = root == "/" ? TarTreeSource.DefaultExclusions(root, work) : [];
            for (int i = 0; i < targets.Length; i++)
            {
                if (!results[i].Verified) { identical = false; say.WriteLine($"node{i + 1}: FAILED: {results[i].Message}"); continue; }
                var diffs = TreeComparer.Compare(root, targets[i], new TreeComparisonOptions { Excludes = excludes });
                if (diffs.Count == 0) say.WriteLine($"node{i + 1}: {targets[i]} is identical to {root} (content, type, mode, owner, mtime, links, xattrs, holes)");
                else
                {
                    identical = false;
                    say.WriteLine($"node{i + 1}: {diffs.Count} difference(s) from {root}:");
                    foreach (var d in diffs.Take(20)) say.WriteLine("  " + d);
                }
            }
            bool ok = report.Success && identical;
            say.WriteLine(ok ? $"demo: all {clients} copies verified and identical" : "demo: FAILED");
            if (keep) say.WriteLine($"demo: work directory kept at {work}");
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
