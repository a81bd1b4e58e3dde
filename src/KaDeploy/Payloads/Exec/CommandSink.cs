using System.Buffers;
using System.Diagnostics;

namespace KaDeploy.Payloads.Exec;

/// <summary>
/// Feeds the payload to the standard input of `/bin/sh -c COMMAND` (e.g. `tar -x -C /mnt`), closes it, and waits.
/// A non-zero exit status fails the payload; so does a command that stops reading before the stream ends (its exit
/// closes the pipe, our next write gets EPIPE, and we report that rather than block). Cancellation kills the command
/// and everything it started.
/// </summary>
public sealed class CommandSink : IPayloadSink
{
    /// <summary>Describes a command that consumes the payload on its stdin.</summary>
    /// <param name="command">A shell command line, run by /bin/sh -c.</param>
    public CommandSink(string command)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(command);
        Command = command;
    }

    /// <summary>The shell command line.</summary>
    public string Command { get; }

    /// <inheritdoc />
    public string Description => $"command '{Command}'";

    /// <summary>Bytes fed to the command by the last completed <see cref="ConsumeAsync"/>.</summary>
    public long BytesWritten { get; private set; }

    /// <inheritdoc />
    public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(input);
        cancellationToken.ThrowIfCancellationRequested();
        using Process process = ShellCommand.Start(Command, feedStdin: true, readStdout: false);
        using CancellationTokenRegistration registration = cancellationToken.Register(() => ShellCommand.Kill(process));
        Stream stdin = process.StandardInput.BaseStream;
        ShellCommand.GrowPipe(stdin);

        // A command can exit while something it started still holds its stdin without reading (`cmd &`): no EPIPE
        // would ever come, and a blocked write would hang. So a write also stops when the command itself exits.
        using var exited = new CancellationTokenSource();
        EventHandler onExited = (_, _) =>
        {
            try { exited.Cancel(); }
            catch (ObjectDisposedException) { }
        };
        process.Exited += onExited;
        process.EnableRaisingEvents = true;
        if (process.HasExited) await exited.CancelAsync().ConfigureAwait(false);
        using var writeCancellation = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, exited.Token);

        // A relayed stream lends its ring slots: spliced into the pipe (the command reads them from the ring itself), or
        // else written to it from the slot, no copy of ours either way.
        var spliced = SplicedPipeFeed.TryCreate(stdin, input);
        var lender = input as IO.ISegmentReader;
        byte[]? buffer = lender is null ? ArrayPool<byte>.Shared.Rent(ShellCommand.BufferSize) : null;
        bool stoppedReading = false;
        long written = 0;
        try
        {
            if (spliced is not null)
            {
                // Blocking system calls: a thread of its own, not one of the pool's.
                stoppedReading = !await Task.Factory.StartNew(() => spliced.Run(() => exited.IsCancellationRequested, cancellationToken),
                    cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default).ConfigureAwait(false);
                written = spliced.Spliced;
            }
            while (spliced is null)
            {
                ReadOnlyMemory<byte> chunk = lender is not null
                    ? await lender.ReadSegmentAsync(cancellationToken).ConfigureAwait(false)
                    : buffer.AsMemory(0, await input.ReadAsync(buffer, cancellationToken).ConfigureAwait(false));
                if (chunk.IsEmpty) break;
                int n = chunk.Length;
                try
                {
                    await stdin.WriteAsync(chunk, writeCancellation.Token).ConfigureAwait(false);
                }
                catch (Exception e) when (e is IOException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
                {
                    // EPIPE, or the command exited: it stopped reading. Its exit status says why.
                    stoppedReading = true;
                    break;
                }
                written += n;
            }
            try
            {
                process.StandardInput.Dispose(); // closes the pipe: the command reads end-of-file
            }
            catch (IOException) when (!cancellationToken.IsCancellationRequested)
            {
                stoppedReading = true;
            }
        }
        catch
        {
            // Our side failed (the upstream went away, or we were cancelled): the command must not outlive us.
            await ShellCommand.KillAndWaitAsync(process).ConfigureAwait(false);
            // Killing the command on cancellation breaks its pipe; report the cancellation, not the broken pipe.
            cancellationToken.ThrowIfCancellationRequested();
            throw;
        }
        finally
        {
            process.Exited -= onExited;
            if (buffer is not null) ArrayPool<byte>.Shared.Return(buffer);
        }

        await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        // The pipe is closed and its reader gone: the ring pages it referenced may be reused now, not before.
        spliced?.ReleaseRest();
        if (stoppedReading)
            throw new KaDeployException($"command '{Command}' stopped reading its input after {written} bytes and exited with status {process.ExitCode}");
        if (process.ExitCode != 0)
            throw new KaDeployException(ShellCommand.ExitMessage(Command, process.ExitCode));
        BytesWritten = written;
    }
}
