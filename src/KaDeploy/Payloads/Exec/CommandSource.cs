using System.Buffers;
using System.Diagnostics;

namespace KaDeploy.Payloads.Exec;

/// <summary>
/// The payload is the standard output of `/bin/sh -c COMMAND` (the original ka-deploy's `-e`, e.g.
/// `tar --create --one-file-system /`). Its stderr goes to ours. The payload fails when the command exits with a
/// non-zero status; cancellation kills the command and everything it started.
/// </summary>
public sealed class CommandSource : IPayloadSource
{
    /// <summary>Describes a command whose output is a payload of the given kind.</summary>
    /// <param name="command">A shell command line, run by /bin/sh -c.</param>
    /// <param name="kind">What the output is: <see cref="PayloadKind.Raw"/> unless the command writes a tar archive.</param>
    /// <param name="estimatedLength">The output's expected length, when the caller knows it, for progress.</param>
    public CommandSource(string command, PayloadKind kind = PayloadKind.Raw, long? estimatedLength = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(command);
        Command = command;
        Kind = kind;
        EstimatedLength = estimatedLength;
    }

    /// <summary>The shell command line.</summary>
    public string Command { get; }

    /// <inheritdoc />
    public PayloadKind Kind { get; }

    /// <inheritdoc />
    public long? EstimatedLength { get; }

    /// <inheritdoc />
    public string Description => $"command '{Command}'";

    /// <inheritdoc />
    public async Task WriteToAsync(Stream output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(output);
        cancellationToken.ThrowIfCancellationRequested();
        using Process process = ShellCommand.Start(Command, feedStdin: false, readStdout: true);
        using CancellationTokenRegistration registration = cancellationToken.Register(() => ShellCommand.Kill(process));
        Stream stdout = process.StandardOutput.BaseStream;
        ShellCommand.GrowPipe(stdout);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(ShellCommand.BufferSize);
        try
        {
            int n;
            while ((n = await stdout.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
                await output.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            // Our side failed (the chain went away, or we were cancelled): the command must not outlive us.
            await ShellCommand.KillAndWaitAsync(process).ConfigureAwait(false);
            // Killing the command on cancellation breaks its pipe; report the cancellation, not the broken pipe.
            cancellationToken.ThrowIfCancellationRequested();
            throw;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        if (process.ExitCode != 0)
            throw new KaDeployException(ShellCommand.ExitMessage(Command, process.ExitCode));
    }
}
