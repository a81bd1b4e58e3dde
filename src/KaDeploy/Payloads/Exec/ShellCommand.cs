using System.ComponentModel;
using System.Diagnostics;
using System.IO.Pipes;
using System.Runtime.InteropServices;

namespace KaDeploy.Payloads.Exec;

/// <summary>Starting and stopping `/bin/sh -c COMMAND` the same way for the command source and sink.</summary>
internal static partial class ShellCommand
{
    public const int BufferSize = 1024 * 1024;

    private const int F_SETPIPE_SZ = 1031; // <linux/fcntl.h>

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(SafeHandle fd, int command, int argument);

    /// <summary>
    /// Grows a pipe to the buffer size (the default is 64 KiB): the writer then moves many relayed frames before it
    /// must wait, and the reader takes them in large reads, so both sides sleep and wake far less often. Best effort:
    /// an unprivileged user over the pipe quota keeps the default, which still works.
    /// </summary>
    public static void GrowPipe(Stream stream)
    {
        if (OperatingSystem.IsLinux() && stream is PipeStream pipe) _ = Fcntl(pipe.SafePipeHandle, F_SETPIPE_SZ, BufferSize);
    }

    /// <summary>
    /// Starts the command with stdin and stdout as pipes (when asked) and stderr shared with ours, so the operator
    /// sees the command's complaints. A stdin we do not feed is closed at once, so the command reads end-of-file
    /// rather than waiting on our terminal.
    /// </summary>
    public static Process Start(string command, bool feedStdin, bool readStdout)
    {
        var info = new ProcessStartInfo("/bin/sh")
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = readStdout,
            RedirectStandardError = false,
        };
        info.ArgumentList.Add("-c");
        info.ArgumentList.Add(command);
        Process process;
        try
        {
            process = Process.Start(info) ?? throw new KaDeployException($"command '{command}' could not be started");
        }
        catch (Win32Exception e)
        {
            throw new KaDeployException($"command '{command}' could not be started: {e.Message}", e);
        }
        if (!feedStdin) process.StandardInput.Close();
        return process;
    }

    /// <summary>Kills the command and everything it started; quiet if it has already gone.</summary>
    public static void Kill(Process process)
    {
        try
        {
            process.Kill(entireProcessTree: true);
        }
        catch (Exception e) when (e is InvalidOperationException or Win32Exception or NotSupportedException)
        {
            // Already exited, or exiting: nothing left to kill.
        }
    }

    /// <summary>Kills the command after a failure of ours and waits for it, so no process outlives the payload.</summary>
    public static async Task KillAndWaitAsync(Process process)
    {
        Kill(process);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            await process.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // A process that ignores SIGKILL for 10 s is stuck in the kernel; the original failure matters more.
        }
    }

    /// <summary>"command 'CMD' exited with status N" (a signal shows as 128 + its number, as in the shell).</summary>
    public static string ExitMessage(string command, int status) => $"command '{command}' exited with status {status}";
}
