using System.Diagnostics;
using KaDeploy.Reporting;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Session;

/// <summary>The real executables, as an administrator runs them: separate processes, the compat names, exit codes, the JSON report.</summary>
public sealed class CliProcessTests : IDisposable
{
    private readonly TempDirectory _dir = new("kad-cli");
    private readonly List<Process> _processes = [];

    private static string AppHost => Path.Combine(AppContext.BaseDirectory, "ka-deploy");

    // The compat names are links to the same binary, as the build lays them out.
    private string Link(string name)
    {
        string link = _dir.Sub(name);
        if (!File.Exists(link)) File.CreateSymbolicLink(link, AppHost);
        return link;
    }

    // The server picks a free port itself (-p 0) and says which in its first log line: no window in
    // which another test could take a port chosen here.
    private async Task<(Process Server, int Port)> StartServerAsync(string program, params string[] args)
    {
        var server = Start(program, [.. args, "-p", "0"]);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (await server.StandardError.ReadLineAsync(timeout.Token) is { } line)
        {
            var m = System.Text.RegularExpressions.Regex.Match(line, @" on port (\d+),");
            if (m.Success) return (server, int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
        }
        throw new InvalidOperationException("the server exited before saying its port");
    }

    private Process Start(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        _processes.Add(p);
        return p;
    }

    private static async Task<(int Code, string Out, string Err)> FinishAsync(Process p)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var stdout = p.StandardOutput.ReadToEndAsync(timeout.Token);
        var stderr = p.StandardError.ReadToEndAsync(timeout.Token);
        await p.WaitForExitAsync(timeout.Token);
        return (p.ExitCode, await stdout, await stderr);
    }

    [Fact]
    public async Task ServerAndClientsAsSeparateProcessesWithTheCompatNames()
    {
        string src = _dir.Sub("src");
        SampleTree.Create(src);
        string report = _dir.Sub("report.json");
        var (server, port) = await StartServerAsync(Link("ka-d-server"), "-n", "3", "-a", "1", "-s", "cli", "--bind", "127.0.0.1",
            "--source", src, "--compress", "zstd", "--report", report, "--no-discovery", "-d", "1");
        var clients = new[]
        {
            Start(Link("ka-d-client"), "-h", $"127.0.0.1:{port}", "-s", "cli", "--bind", "127.0.5.1", "--target", _dir.Sub("n1"), "-w"),
            Start(Link("ka-d-client"), "-h", $"127.0.0.1:{port}", "-s", "cli", "--bind", "127.0.5.2", "--target", _dir.Sub("n2")),
            Start(AppHost, "client", "--server", $"127.0.0.1:{port}", "-s", "cli", "--bind", "127.0.5.3", "--target", _dir.Sub("n3"), "--wait-release"),
        };
        var done = await Task.WhenAll(clients.Select(FinishAsync));
        var (code, output, errors) = await FinishAsync(server);
        Assert.True(code == 0, $"server exit {code}\n{output}\n{errors}\n" + string.Join("\n", done.Select(d => d.Err)));
        Assert.All(done, d => Assert.True(d.Code == 0, d.Err));
        Assert.Contains("3/3 nodes verified", output);
        var r = SessionReport.ReadJson(report);
        Assert.True(r.Success);
        Assert.Equal(3, r.Nodes.Count(n => n.Verified && n.State == NodeState.Verified));
        Assert.Equal("zstd:3", r.Compression);
        foreach (var n in new[] { "n1", "n2", "n3" })
            Assert.Empty(TreeComparer.Compare(src, _dir.Sub(n)));
    }

    [Fact]
    public async Task ClientFindsTheServerBySessionAndGoStartsIt()
    {
        string src = _dir.Sub("src");
        Directory.CreateDirectory(src);
        File.WriteAllText(Path.Combine(src, "hello"), "hello");
        // Discovery on loopback, on a UDP port of this test's own (never the fixed 4957 another run may use): the
        // client broadcasts on the loopback network (127.255.255.255), as it would on a cluster's.
        using var reserve = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Dgram, System.Net.Sockets.ProtocolType.Udp);
        reserve.SetSocketOption(System.Net.Sockets.SocketOptionLevel.Socket, System.Net.Sockets.SocketOptionName.ReuseAddress, true);
        reserve.SetRawSocketOption(1, 15, BitConverter.GetBytes(1)); // SO_REUSEPORT, as the servers bind it
        reserve.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Any, 0));
        string discoveryPort = ((System.Net.IPEndPoint)reserve.LocalEndPoint!).Port.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var (server, port) = await StartServerAsync(AppHost, "server", "-n", "5", "-s", "disc", "--bind", "127.0.0.1", "--source", src, "--discovery-port", discoveryPort);
        var client = Start(AppHost, "client", "-s", "disc", "--discovery-address", "127.255.255.255", "--discovery-port", discoveryPort,
            "--bind", "127.0.6.1", "--target", _dir.Sub("n1"));
        // `go` starts with whoever has registered: wait until the client says it has, as an operator would.
        await ReadUntilAsync(client, "registered with ");
        var go = await FinishAsync(Start(Link("ka-d-client"), "-g", "-h", $"127.0.0.1:{port}", "-s", "disc"));
        Assert.True(go.Code == 0, go.Err);
        Assert.Contains("starts with 1 of 5", go.Err);
        var c = await FinishAsync(client);
        var s = await FinishAsync(server);
        Assert.True(c.Code == 0, c.Err);
        Assert.True(s.Code == 0, s.Err);
        Assert.Equal("hello", File.ReadAllText(_dir.Sub("n1/hello")));
    }

    // Reads a process's log until a line holds `text` (the rest stays readable for FinishAsync).
    private static async Task ReadUntilAsync(Process p, string text)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (await p.StandardError.ReadLineAsync(timeout.Token) is { } line)
            if (line.Contains(text, StringComparison.Ordinal)) return;
        throw new InvalidOperationException($"the process exited before saying '{text}'");
    }

    [Fact]
    public async Task BadInputGivesAOneLineErrorAndANonZeroExit()
    {
        var cases = new[]
        {
            new[] { "client", "--server", "127.0.0.1:1" },
            ["server", "--source", _dir.Sub("missing"), "-p", "0"],
            ["server", "--compress", "lz4", "--source", _dir.Path],
            ["server", "--buffer", "lots", "--source", _dir.Path],
            ["server", "--image", _dir.Sub("no-such.img")],
        };
        foreach (var args in cases)
        {
            var (code, _, err) = await FinishAsync(Start(AppHost, args));
            Assert.True(code != 0, $"{string.Join(' ', args)} exited 0");
            var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.True(lines.Length == 1, $"{string.Join(' ', args)} printed:\n{err}");
            Assert.StartsWith("ka-deploy: ", lines[0]);
        }
    }

    public void Dispose()
    {
        foreach (var p in _processes)
        {
            try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            p.Dispose();
        }
        _dir.Dispose();
    }
}
