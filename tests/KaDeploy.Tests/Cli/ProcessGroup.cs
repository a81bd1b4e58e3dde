using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace KaDeploy.Tests.Cli;

/// <summary>
/// The processes a test starts (servers, clients, a pseudo-terminal): each is killed with its children when the test
/// ends, whether it passed or not, so no server outlives its test holding a port or a directory.
/// </summary>
internal sealed partial class ProcessGroup : IDisposable
{
    private readonly List<Process> _processes = [];

    /// <summary>Starts <paramref name="program"/> with its output and input redirected, and keeps it for <see cref="Dispose"/>.</summary>
    public Process Start(string program, IEnumerable<string> args) => Track(CliRunner.Start(program, args));

    /// <summary>Keeps a process started elsewhere, to be killed at the end.</summary>
    public Process Track(Process p)
    {
        _processes.Add(p);
        return p;
    }

    /// <summary>
    /// Starts a server with <c>-p 0</c>: it picks a free port itself and says which in its first log line, so there is no
    /// window in which another test could take a port chosen here. <paramref name="args"/> begin with the command
    /// (<c>server</c>), or not at all for the original's ka-d-server name.
    /// </summary>
    public async Task<(Process Server, int Port)> StartServerAsync(string program, params string[] args)
    {
        var server = Start(program, [.. args, "-p", "0"]);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (await server.StandardError.ReadLineAsync(timeout.Token) is { } line)
        {
            var m = PortLine().Match(line);
            if (m.Success) return (server, int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));
        }
        throw new InvalidOperationException("the server exited before saying its port");
    }

    /// <summary>Waits (two minutes at most) for the process to end and returns its exit code and what it printed.</summary>
    public static async Task<(int Code, string Out, string Err)> FinishAsync(Process p)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var stdout = p.StandardOutput.ReadToEndAsync(timeout.Token);
        var stderr = p.StandardError.ReadToEndAsync(timeout.Token);
        await p.WaitForExitAsync(timeout.Token);
        return (p.ExitCode, await stdout, await stderr);
    }

    [GeneratedRegex(@" on port (\d+),")]
    private static partial Regex PortLine();

    public void Dispose()
    {
        foreach (var p in _processes)
        {
            try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            p.Dispose();
        }
    }
}
