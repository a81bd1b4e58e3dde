using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using KaDeploy.Reporting;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Cli;

/// <summary>The defects of issue 11, each tried as the new user who found it did: the real executable, in its own process.</summary>
public sealed class OperatorDefectTests : IDisposable
{
    private readonly TempDirectory _dir = new("kad-ops");
    private readonly ProcessGroup _processes = new();

    private static bool IsRoot => Environment.UserName == "root";

    private Process Start(params string[] args) => _processes.Start(CliRunner.AppHost, args);

    private static Task<(int Code, string Out, string Err)> FinishAsync(Process p) => ProcessGroup.FinishAsync(p);

    private Task<(Process Server, int Port)> StartServerAsync(params string[] args) => _processes.StartServerAsync(CliRunner.AppHost, ["server", .. args]);

    // 1. --buffer 0 waited for clients and then died with a stack trace (exit 134); --buffer 1 was rounded silently.
    [Fact]
    public async Task BufferOutOfRangeIsRefusedBeforeAnythingWaits()
    {
        var server = await CliRunner.RunAsync(CliRunner.AppHost, ["server", "--buffer", "0", "--source", _dir.Path, "-p", "0", "--no-discovery"], TimeSpan.FromSeconds(20));
        CliRunner.AssertOneLineRefusal(server, "server --buffer 0", 2);
        Assert.Contains("--buffer", server.Err);
        var client = await CliRunner.RunAsync(CliRunner.AppHost, ["client", "--buffer", "1", "--server", "127.0.0.1:1", "--connect-timeout", "1", "--target", _dir.Sub("t")], TimeSpan.FromSeconds(20));
        CliRunner.AssertOneLineRefusal(client, "client --buffer 1", 2);
        Assert.Contains("must be between", client.Err);
    }

    // 2. --report into a missing directory: the whole deployment ran, then failed at the end.
    [Fact]
    public async Task ReportIntoAMissingDirectoryIsRefusedAtTheStart()
    {
        var r = await CliRunner.RunAsync(CliRunner.AppHost, ["server", "--report", _dir.Sub("missing-dir/r.json"), "--source", _dir.Path, "-p", "0", "--no-discovery"],
            TimeSpan.FromSeconds(20));
        CliRunner.AssertOneLineRefusal(r, "server --report missing-dir/r.json", 2);
        Assert.Contains("does not exist", r.Err);
    }

    // 3. --image took anything as a raw disk image; a directory gave "Access to the path is denied".
    [Fact]
    public async Task ImagesThatAreNotWhatTheySeemAreRefused()
    {
        string text = _dir.Sub("notes.img");
        File.WriteAllText(text, "hello world\n"); // 12 bytes
        string empty = _dir.Sub("empty.img");
        File.WriteAllBytes(empty, []);
        var junk = new byte[4096];
        new Random(11).NextBytes(junk);
        // Content is judged by the image sniffing (Payloads/Image), names and file kinds by the CLI: either refusal will do,
        // as long as it is one line naming why.
        var cases = new Dictionary<string, string[]>
        {
            [_dir.Path] = ["is a directory"],
            [empty] = ["is empty"],
            [text] = ["not a whole number of 512-byte sectors", "refusing to send it as a disk image"],
        };
        foreach (var name in new[] { "junk.tar", "junk.tar.gz", "junk.tar.zst" })
        {
            File.WriteAllBytes(_dir.Sub(name), junk);
            cases[_dir.Sub(name)] = ["its content is not one", "is not a tar archive"];
        }
        foreach (var (image, expected) in cases)
        {
            var r = await CliRunner.RunAsync(CliRunner.AppHost, ["server", "--image", image, "-p", "0", "--no-discovery"], TimeSpan.FromSeconds(20));
            CliRunner.AssertOneLineRefusal(r, $"--image {Path.GetFileName(image)}", 1, 2);
            Assert.True(expected.Any(e => r.Err.Contains(e, StringComparison.Ordinal)), $"--image {Path.GetFileName(image)}: {r.Err}");
        }
    }

    // 4. A non-empty target file was overwritten without --force; a read-only target was found only when the stream started.
    [Fact]
    public async Task ATargetFileThatHoldsSomethingNeedsForce()
    {
        string target = _dir.Sub("disk.img");
        File.WriteAllText(target, "precious");
        var r = await CliRunner.RunAsync(CliRunner.AppHost, ["client", "--server", "127.0.0.1:1", "--connect-timeout", "1", "--target", target], TimeSpan.FromSeconds(20));
        CliRunner.AssertOneLineRefusal(r, "client --target existing-file", 1);
        Assert.Contains("--force", r.Err);
        Assert.Equal("precious", File.ReadAllText(target));
        // With --force the check passes and the client goes on to look for its server (none here).
        var forced = await CliRunner.RunAsync(CliRunner.AppHost, ["client", "--server", "127.0.0.1:1", "--connect-timeout", "1", "--target", target, "--force"], TimeSpan.FromSeconds(20));
        Assert.Contains("no server at", forced.Err);
    }

    [SkippableFact]
    public async Task AReadOnlyTargetIsRefusedBeforeRegistering()
    {
        Skip.IfNot(IsRoot, "needs root for a read-only bind mount in a private mount namespace");
        string target = _dir.Sub("ro");
        Directory.CreateDirectory(target);
        // The client sees the target read-only in its own mount namespace; nothing outlives the process.
        var r = await CliRunner.RunAsync("unshare", ["-m", "sh", "-c",
            $"mount --bind '{target}' '{target}' && mount -o remount,ro,bind '{target}' && exec '{CliRunner.AppHost}' client --server 127.0.0.1:1 --connect-timeout 30 --target '{target}'"],
            TimeSpan.FromSeconds(20));
        CliRunner.AssertOneLineRefusal(r, "client --target read-only", 1);
        Assert.Contains("read-only", r.Err);
    }

    // 5. Two servers on one host, each answering discovery for its own session, on a port of the test's own; both
    // with --bind (which used to turn discovery off).
    [Fact]
    public async Task SeveralServersOnOneHostEachAnswerForTheirOwnSession()
    {
        using var reserve = ReserveDiscoveryPort(out int port);
        string p = port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var servers = new List<Process>();
        foreach (var session in new[] { "alpha", "beta" })
        {
            string src = _dir.Sub("src-" + session);
            Directory.CreateDirectory(src);
            File.WriteAllText(Path.Combine(src, "who"), session);
            var (server, _) = await StartServerAsync("-s", session, "--bind", "127.0.0.1", "--discovery-port", p, "--source", src);
            servers.Add(server);
        }
        var clients = new[] { ("alpha", "127.0.8.1"), ("beta", "127.0.8.2") }.Select(c =>
            Start("client", "-s", c.Item1, "--discovery-address", "127.255.255.255", "--discovery-port", p, "--bind", c.Item2,
                "--connect-timeout", "30", "--target", _dir.Sub("t-" + c.Item1))).ToArray();
        var results = await Task.WhenAll(clients.Select(FinishAsync));
        foreach (var s in servers)
        {
            var sr = await FinishAsync(s);
            Assert.True(sr.Code == 0, sr.Err);
            Assert.DoesNotContain("discovery disabled", sr.Err);
        }
        Assert.All(results, r => Assert.True(r.Code == 0, r.Err));
        Assert.Equal("alpha", File.ReadAllText(_dir.Sub("t-alpha/who")));
        Assert.Equal("beta", File.ReadAllText(_dir.Sub("t-beta/who")));
    }

    [Fact]
    public async Task DiscoveryKeepsLookingUntilTheConnectTimeout()
    {
        using var reserve = ReserveDiscoveryPort(out int port);
        var r = await CliRunner.RunAsync(CliRunner.AppHost, ["client", "-s", "nobody", "--discovery-address", "127.255.255.255",
            "--discovery-port", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--connect-timeout", "3", "--target", _dir.Sub("t")],
            TimeSpan.FromSeconds(60));
        Assert.Equal(1, r.Code);
        Assert.Contains("within 3 s", r.Err);
        Assert.DoesNotContain("after 10 tries", r.Err);
    }

    // A UDP port shared the way servers share 4957 (SO_REUSEADDR + SO_REUSEPORT): held for the test, so no other
    // process takes it meanwhile; the holder ignores what it receives.
    private static Socket ReserveDiscoveryPort(out int port)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        s.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        s.SetRawSocketOption(1, 15, BitConverter.GetBytes(1));
        s.Bind(new IPEndPoint(IPAddress.Any, 0));
        port = ((IPEndPoint)s.LocalEndPoint!).Port;
        return s;
    }

    // 6. On a terminal: a live view of the nodes (places, states), log lines on lines of their own (the old progress
    // line had log text glued to it), and no "slowest node 0 B" once every node is done.
    [SkippableFact]
    public async Task OnATerminalTheLiveViewShowsEveryNodeAndLogLinesStayOnTheirOwnLines()
    {
        Skip.If(!File.Exists("/usr/bin/script"), "needs script(1) (util-linux) for a pseudo-terminal");
        string src = _dir.Sub("src");
        SampleTree.Create(src);
        var psi = new ProcessStartInfo("/usr/bin/script") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var a in new[] { "-qfec", $"'{CliRunner.AppHost}' server -n 2 -a 1 -s tty --bind 127.0.0.1 --no-discovery -p 0 --source '{src}'", "/dev/null" })
            psi.ArgumentList.Add(a);
        psi.Environment["TERM"] = "xterm";
        var script = Process.Start(psi)!;
        _processes.Track(script);
        var output = new System.Text.StringBuilder();
        var portSeen = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var viewSeen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var reading = Task.Run(async () =>
        {
            var buffer = new char[4096];
            int n;
            while ((n = await script.StandardOutput.ReadAsync(buffer)) > 0)
            {
                lock (output) output.Append(buffer, 0, n);
                string all;
                lock (output) all = output.ToString();
                var m = Regex.Match(all, @" on port (\d+),");
                if (m.Success) portSeen.TrySetResult(int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
                if (all.Contains("session 'tty' waiting", StringComparison.Ordinal)) viewSeen.TrySetResult();
            }
        });
        int port = await portSeen.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await viewSeen.Task.WaitAsync(TimeSpan.FromSeconds(30)); // the view is up while the server waits: registrations are logged over it
        var clients = new[] { "127.0.9.1", "127.0.9.2" }.Select((a, i) =>
            Start("client", "--server", $"127.0.0.1:{port}", "-s", "tty", "--bind", a, "--target", _dir.Sub($"n{i}"), "--no-progress")).ToArray();
        var done = await Task.WhenAll(clients.Select(FinishAsync));
        await script.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));
        await reading;
        Assert.All(done, d => Assert.True(d.Code == 0, d.Err));
        string text = output.ToString();
        Assert.True(script.ExitCode == 0, text);
        Assert.Contains("chain   node", text); // the view's header row: places in the chain
        foreach (Match m in Regex.Matches(text, "ka-deploy server: "))
        {
            // Every log line starts a line: after a newline, or after the view was erased (ESC [ J).
            string before = text[Math.Max(0, m.Index - 3)..m.Index];
            bool first = Regex.Replace(text[..m.Index], @"\u001b(\[[0-9;?]*[A-Za-z]|[=>])", "").Length == 0; // only the terminal's set-up before it
            Assert.True(first || before.EndsWith('\n') || before.EndsWith("\u001b[J", StringComparison.Ordinal),
                $"log text glued to other output: ...{text[Math.Max(0, m.Index - 60)..Math.Min(text.Length, m.Index + 40)]}");
        }
        Assert.DoesNotContain("slowest node 0 B", text);
        Assert.Matches(@"registered \S+ .* as node \d", text);
        // The summary lists nodes by place.
        Assert.Matches(@"\n1 +\d+:", text);
        Assert.Matches(@"\n2 +\d+:", text);
    }

    // 8. The JSON report escaped ' as \u0027; `server --help` did not list --version; ka-d-client --help listed /h.
    [Fact]
    public async Task HelpListsVersionAndTheCompatClientHasNoSlashH()
    {
        var server = await CliRunner.RunAsync("server", "--help");
        Assert.Equal(0, server.Code);
        Assert.Contains("--version", server.Out);
        var version = await CliRunner.RunAsync("server", "--version");
        Assert.Equal(0, version.Code);
        Assert.Matches(@"^\d+\.\d+", version.Out);

        string link = _dir.Sub("ka-d-client");
        File.CreateSymbolicLink(link, CliRunner.AppHost);
        var compat = await CliRunner.RunAsync(link, ["--help"]);
        Assert.Equal(0, compat.Code);
        Assert.DoesNotContain("/h", compat.Out);
        Assert.Contains("-h, --server", compat.Out);
    }

    [Fact]
    public void TheReportKeepsApostrophesReadable()
    {
        var report = new SessionReport { Session = "o'neil's lab", Message = "node <3> & co" };
        string path = _dir.Sub("r.json");
        report.WriteJson(path);
        string json = File.ReadAllText(path);
        Assert.Contains("o'neil's lab", json);
        Assert.Contains("node <3> & co", json);
        Assert.DoesNotContain("\\u0027", json);
        Assert.Equal("o'neil's lab", SessionReport.ReadJson(path).Session);
    }

    public void Dispose()
    {
        _processes.Dispose();
        _dir.Dispose();
    }
}
