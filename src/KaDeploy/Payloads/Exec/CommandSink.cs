using System.Buffers;
using System.Diagnostics;
using System.IO.Pipes;
using System.Runtime.InteropServices;
using KaDeploy.Platform;

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

        // A relayed stream lends runs of frames from their ring slots: each run goes into the pipe with one writev(2).
        if (input is IO.ISegmentRunReader { LendsRuns: true } runs && stdin is PipeStream { SafePipeHandle: var pipe } && OperatingSystem.IsLinux())
        {
            PipeGather.SetNonBlocking(pipe);
            (bool stopped, long count) = await WriteRunsAsync(runs, stdin, pipe, process, writeCancellation.Token, cancellationToken).ConfigureAwait(false);
            await FinishAsync(process, stopped, count, cancellationToken).ConfigureAwait(false);
            return;
        }

        // Otherwise each frame lent from its ring slot is written to the pipe as it is, no copy of ours.
        var lender = input as IO.ISegmentReader;
        byte[]? buffer = lender is null ? ArrayPool<byte>.Shared.Rent(ShellCommand.BufferSize) : null;
        bool stoppedReading = false;
        long written = 0;
        try
        {
            while (true)
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

        await FinishAsync(process, stoppedReading, written, cancellationToken).ConfigureAwait(false);
    }

    // Waits for the command; its exit status, or its having stopped reading, is the verdict.
    private async Task FinishAsync(Process process, bool stoppedReading, long written, CancellationToken cancellationToken)
    {
        await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        if (stoppedReading)
            throw new KaDeployException($"command '{Command}' stopped reading its input after {written} bytes and exited with status {process.ExitCode}");
        if (process.ExitCode != 0)
            throw new KaDeployException(ShellCommand.ExitMessage(Command, process.ExitCode));
        BytesWritten = written;
    }

    // Each run of lent frames goes into the pipe with one writev(2) on this thread: one system call and one turn of
    // the pipe's lock per run (RunSegments frames), where a write per frame took one of each and a thread-pool hop. A full
    // pipe (a short write, or EAGAIN) is waited for with an ordinary write of what is left of the current segment,
    // which the command's exit (writeCancellation) stops; the next writev takes the rest. The run is returned to the ring once the pipe holds a copy of all of it.
    private static async Task<(bool StoppedReading, long Written)> WriteRunsAsync(IO.ISegmentRunReader runs, Stream stdin,
        SafeHandle pipe, Process process, CancellationToken writeCancellation, CancellationToken cancellationToken)
    {
        var run = new ReadOnlyMemory<byte>[RunSegments];
        long written = 0;
        bool stoppedReading = false;
        try
        {
            while (!stoppedReading)
            {
                int n = await runs.LendAsync(run, cancellationToken).ConfigureAwait(false);
                if (n == 0) break;
                int first = 0, skip = 0; // what is left: run[first][skip..], then the segments after it
                try
                {
                    bool full = false;
                    while (first < n)
                    {
                        long w;
                        if (full)
                        {
                            var rest = run[first][skip..];
                            await stdin.WriteAsync(rest, writeCancellation).ConfigureAwait(false);
                            w = rest.Length;
                            full = false;
                        }
                        else
                        {
                            w = PipeGather.TryWrite(pipe, run.AsSpan(first, n - first), skip);
                            full = true; // unless all of it went in: a short write means a full pipe, retrying at once would only find it full
                        }
                        written += w;
                        while (first < n && w >= run[first].Length - skip)
                        {
                            w -= run[first].Length - skip;
                            first++;
                            skip = 0;
                        }
                        skip += (int)w;
                    }
                }
                catch (Exception e) when (e is IOException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
                {
                    // EPIPE, or the command exited: it stopped reading. Its exit status says why.
                    stoppedReading = true;
                    continue;
                }
                finally
                {
                    run.AsSpan(0, n).Clear();
                }
                runs.Return(n);
            }
            try
            {
                process.StandardInput.Dispose(); // closes the pipe: the command reads end-of-file
            }
            catch (IOException) when (!cancellationToken.IsCancellationRequested)
            {
                stoppedReading = true;
            }
            return (stoppedReading, written);
        }
        catch
        {
            // Our side failed (the upstream went away, or we were cancelled): the command must not outlive us.
            await ShellCommand.KillAndWaitAsync(process).ConfigureAwait(false);
            // Killing the command on cancellation breaks its pipe; report the cancellation, not the broken pipe.
            cancellationToken.ThrowIfCancellationRequested();
            throw;
        }
    }

    // Frames per run: 4 (256 KiB). A run is digested as it is lent, then copied into the pipe; at 16 frames (1 MiB)
    // the first frames had left the cache before the copy, and the pipe write's copy cost 2-3 times as many samples
    // as at 1 or 4 frames per write (perf of a relay node, bench/README.md, issue 10, seventh session).
    private const int RunSegments = 4;
}
