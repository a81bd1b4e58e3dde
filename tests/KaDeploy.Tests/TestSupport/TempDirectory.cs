using System.Diagnostics;

namespace KaDeploy.Tests.TestSupport;

/// <summary>A fresh directory under /var/tmp (falls back to the temp path), removed with everything in it on Dispose.</summary>
public sealed class TempDirectory : IDisposable
{
    public string Path { get; }

    public TempDirectory(string prefix = "kad")
    {
        string parent = Directory.Exists("/var/tmp") ? "/var/tmp" : System.IO.Path.GetTempPath();
        Path = System.IO.Path.Combine(parent, $"{prefix}-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path);
    }

    public string Sub(string relative) => System.IO.Path.Combine(Path, relative);

    public void Dispose()
    {
        try
        {
            // chattr/immutable bits are never set by tests; plain recursive removal, symlinks not followed.
            if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
        }
        catch (Exception) when (Run("rm", "-rf", Path) == 0)
        {
        }
    }

    /// <summary>Runs a program, returns its exit code (-1 if it cannot start).</summary>
    public static int Run(string file, params string[] args)
    {
        try
        {
            var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (string a in args) psi.ArgumentList.Add(a);
            using Process p = Process.Start(psi)!;
            p.StandardOutput.ReadToEnd();
            p.StandardError.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return -1;
        }
    }

    /// <summary>Runs a program and returns (exit code, stdout+stderr).</summary>
    public static (int Code, string Output) RunCapture(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string a in args) psi.ArgumentList.Add(a);
        using Process p = Process.Start(psi)!;
        string o = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, o);
    }
}
