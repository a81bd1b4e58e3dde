using System.Diagnostics;
using KaDeploy.Reporting;
using KaDeploy.Tests.Cli;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Session;

/// <summary>The real executables, as an administrator runs them: separate processes, the compat names, exit codes, the JSON report.</summary>
public sealed class CliProcessTests : IDisposable
{
    private readonly TempDirectory _dir = new("kad-cli");
    private readonly ProcessGroup _processes = new();

    private static string AppHost => Path.Combine(AppContext.BaseDirectory, "ka-deploy");

    // The compat names are links to the same binary, as the build lays them out.
    private string Link(string name)
    {
        string link = _dir.Sub(name);
        if (!File.Exists(link)) File.CreateSymbolicLink(link, AppHost);
        return link;
    }

    private Task<(Process Server, int Port)> StartServerAsync(string program, params string[] args) => _processes.StartServerAsync(program, args);

    private Process Start(string program, params string[] args) => _processes.Start(program, args);

    private static Task<(int Code, string Out, string Err)> FinishAsync(Process p) => ProcessGroup.FinishAsync(p);

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
        _processes.Dispose();
        _dir.Dispose();
    }
}
