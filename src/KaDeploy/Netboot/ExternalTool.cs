using System.Diagnostics;

namespace KaDeploy.Netboot;

/// <summary>Runs the system tools the network boot is built from (apt-get, dpkg-deb, depmod, ldd, dnsmasq).</summary>
internal static class ExternalTool
{
    /// <summary>Runs <paramref name="file"/> to completion; returns exit status, stdout and stderr.</summary>
    public static (int Status, string Stdout, string Stderr) Run(string file, IEnumerable<string> args, string? workingDirectory = null)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) info.ArgumentList.Add(a);
        if (workingDirectory is not null) info.WorkingDirectory = workingDirectory;
        info.Environment["LC_ALL"] = "C";
        Process p;
        try { p = Process.Start(info) ?? throw new KaDeployException($"cannot start {file}"); }
        catch (System.ComponentModel.Win32Exception e) { throw new KaDeployException($"cannot run {file}: {e.Message}"); }
        using (p)
        {
            var stderr = p.StandardError.ReadToEndAsync();
            string stdout = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return (p.ExitCode, stdout, stderr.GetAwaiter().GetResult());
        }
    }

    /// <summary>Runs and throws a one-line <see cref="KaDeployException"/> with the tool's last stderr line on failure.</summary>
    public static string Check(string what, string file, params string[] args)
    {
        var (status, stdout, stderr) = Run(file, args);
        if (status != 0)
        {
            string last = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? $"exit status {status}";
            throw new KaDeployException($"{what}: {last}");
        }
        return stdout;
    }

    /// <summary>The full path of a program found on PATH (plus the sbin directories), or null.</summary>
    public static string? Which(string name)
    {
        if (name.Contains('/', StringComparison.Ordinal)) return File.Exists(name) ? name : null;
        var dirs = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]);
        return dirs.Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);
    }
}
