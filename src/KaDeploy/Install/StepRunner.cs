using System.Diagnostics;
using System.Text;

namespace KaDeploy.Install;

/// <summary>A failed install step: the message names the step, the command and what it wrote to stderr, on one line.</summary>
public sealed class InstallStepException(string step, string message) : KaDeployException($"step '{step}' failed: {message}")
{
    /// <summary>The step that failed ("partition", "mkfs /boot", "boot loader", "hook 10-motd", ...).</summary>
    public string Step { get; } = step;
}

/// <summary>Runs the external tools of an install (sfdisk, mkfs.*, mount, chroot ...), bounded and logged.</summary>
public static class StepRunner
{
    /// <summary>Quotes argv for logs and dry-run plans, the way a shell would read it back.</summary>
    public static string Quote(IEnumerable<string> argv) => string.Join(' ', argv.Select(a =>
        a.Length > 0 && a.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,@%+".Contains(c)) ? a : "'" + a.Replace("'", "'\\''", StringComparison.Ordinal) + "'"));

    /// <summary>
    /// Runs <paramref name="argv"/>; returns its stdout. A non-zero exit throws <see cref="InstallStepException"/> with the
    /// command and its stderr folded to one line. <paramref name="timeout"/> bounds it (the process is killed after it).
    /// </summary>
    public static async Task<string> RunAsync(string step, IReadOnlyList<string> argv, CancellationToken ct,
        string? stdin = null, IReadOnlyDictionary<string, string>? environment = null, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(argv);
        var psi = new ProcessStartInfo(argv[0])
        {
            RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false,
        };
        foreach (var a in argv.Skip(1)) psi.ArgumentList.Add(a);
        psi.Environment["LC_ALL"] = "C";
        psi.Environment["DEBIAN_FRONTEND"] = "noninteractive";
        if (environment is not null)
            foreach (var (k, v) in environment) psi.Environment[k] = v;
        Process p;
        try
        {
            p = Process.Start(psi) ?? throw new InstallStepException(step, $"cannot start {argv[0]}");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InstallStepException(step, $"cannot run {argv[0]}: {e.Message}");
        }
        using (p)
        {
            var stdout = p.StandardOutput.ReadToEndAsync(ct);
            var stderr = p.StandardError.ReadToEndAsync(ct);
            try
            {
                if (stdin is not null) await p.StandardInput.WriteAsync(stdin.AsMemory(), ct).ConfigureAwait(false);
                p.StandardInput.Close();
            }
            catch (IOException) { } // it exited without reading: its exit code says why
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
            limit.CancelAfter(timeout ?? TimeSpan.FromMinutes(30));
            try
            {
                await p.WaitForExitAsync(limit.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                if (ct.IsCancellationRequested) throw;
                throw new InstallStepException(step, $"{Quote(argv)} did not finish within {(timeout ?? TimeSpan.FromMinutes(30)).TotalSeconds:0} s");
            }
            string err = await stderr.ConfigureAwait(false);
            string output = await stdout.ConfigureAwait(false);
            if (p.ExitCode != 0)
                throw new InstallStepException(step, $"{Quote(argv)} exited {p.ExitCode}: {OneLine(err.Length > 0 ? err : output)}");
            return output;
        }
    }

    /// <summary>Folds a tool's stderr into one bounded line (the last lines are the ones that say why).</summary>
    public static string OneLine(string text)
    {
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var sb = new StringBuilder();
        foreach (var l in lines.TakeLast(4))
        {
            if (sb.Length > 0) sb.Append(" | ");
            sb.Append(l);
        }
        string s = sb.Length > 0 ? sb.ToString() : "(no output)";
        return s.Length > 400 ? "..." + s[^400..] : s;
    }
}
