using System.Diagnostics;

namespace KaDeploy.Tests.Cli;

/// <summary>Runs the real executable (the apphost next to the tests) and collects its exit code and output.</summary>
internal static class CliRunner
{
    public static string AppHost => Path.Combine(AppContext.BaseDirectory, "ka-deploy");

    public static Process Start(string program, IEnumerable<string> args, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        return Process.Start(psi)!;
    }

    /// <summary>Runs to the end; a process still running after <paramref name="timeout"/> is killed and reported as exit -1.</summary>
    public static async Task<(int Code, string Out, string Err)> RunAsync(string program, IEnumerable<string> args, TimeSpan? timeout = null,
        IDictionary<string, string>? env = null)
    {
        using var p = Start(program, args, env);
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(60));
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync();
            return (-1, await stdout, await stderr + "\n[killed: still running after the timeout]");
        }
        return (p.ExitCode, await stdout, await stderr);
    }

    public static Task<(int Code, string Out, string Err)> RunAsync(params string[] args) => RunAsync(AppHost, args);

    /// <summary>Asserts the shape of a refusal: the exit code, one line on standard error starting with the program's name, no stack trace.</summary>
    public static void AssertOneLineRefusal((int Code, string Out, string Err) r, string what, params int[] codes)
    {
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(codes.Contains(r.Code), $"{what}: exit {r.Code}, expected {string.Join(" or ", codes)}\n{r.Err}");
        Assert.True(lines.Length == 1, $"{what}: {lines.Length} lines on stderr:\n{r.Err}");
        Assert.StartsWith("ka-deploy: ", lines[0]);
        Assert.DoesNotContain("   at ", r.Err);
        Assert.DoesNotContain("Exception", lines[0]);
    }
}
