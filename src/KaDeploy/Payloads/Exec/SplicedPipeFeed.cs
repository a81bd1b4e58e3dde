using System.IO.Pipes;
using Microsoft.Win32.SafeHandles;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using KaDeploy.IO;
using static KaDeploy.Platform.LinuxNative;

namespace KaDeploy.Payloads.Exec;

/// <summary>
/// Feeds a command's stdin pipe with vmsplice(2) from segments a reader holds for us (issue 10): the pipe takes
/// references to the ring's pages instead of a copy, so a relay node no longer copies every byte it hands its local
/// command (write(2) into the pipe was a fifth of a relay node's CPU). The pages are read by the command later, so
/// a held segment is released only once the pipe no longer holds its bytes: FIONREAD on the pipe says how many are
/// still in it, and everything spliced before those has been read. What is still in the pipe at the end is released
/// by <see cref="ReleaseRest"/>, which the caller calls only after closing the pipe and seeing the command exit.
/// </summary>
/// <remarks>
/// Not for a reader whose segments can change under a held loan: the stall watch may evict a hung sink's cursor, and
/// a command that then reads on would read reused slots. Its copy has already failed (the node reports it), as with
/// a slot reused under a write in flight.
/// </remarks>
internal sealed unsafe class SplicedPipeFeed
{
    private const int MaxSegments = 16; // one receive's run: about 1 MiB per vmsplice
    private const int PollMs = 100;     // how often a full pipe re-checks that its command is still there

    private readonly SafePipeHandle _pipe;
    private readonly ISegmentReader _lender;
    private long _released;

    private SplicedPipeFeed(SafePipeHandle pipe, ISegmentReader lender)
    {
        _pipe = pipe;
        _lender = lender;
    }

    /// <summary>A feed for <paramref name="stdin"/> from <paramref name="input"/>, or null when either cannot (not Linux, not a pipe, a reader that cannot hold).</summary>
    public static SplicedPipeFeed? TryCreate(Stream stdin, Stream input) =>
        OperatingSystem.IsLinux() && stdin is PipeStream pipe && input is ISegmentReader { CanHoldSegments: true } lender
            ? new SplicedPipeFeed(pipe.SafePipeHandle, lender)
            : null;

    /// <summary>Bytes spliced into the pipe.</summary>
    public long Spliced { get; private set; }

    /// <summary>
    /// Splices the whole stream (blocking: run it on a thread of its own). Returns false when the command stopped
    /// reading (a broken pipe, or <paramref name="exited"/> while the pipe was full).
    /// </summary>
    public bool Run(Func<bool> exited, CancellationToken cancellationToken)
    {
        bool added = false;
        _pipe.DangerousAddRef(ref added);
        try
        {
            int fd = (int)_pipe.DangerousGetHandle();
            var segments = new ReadOnlyMemory<byte>[MaxSegments];
            Iovec* iov = stackalloc Iovec[MaxSegments];
            while (true)
            {
                ReleaseRead(fd);
                int n = _lender.ReadHeldSegments(segments, cancellationToken);
                if (n == 0) return true; // the End frame: everything is in the pipe
                if (n < 0)
                {
                    // No hold room (a ring of a few slots): hold no more until the command has read some.
                    if (exited()) return false;
                    cancellationToken.ThrowIfCancellationRequested();
                    Thread.Sleep(1);
                    continue;
                }
                for (int i = 0; i < n; i++)
                {
                    // Held segments lie in pinned memory (ISegmentReader.ReadHeldSegments): their address stays valid.
                    iov[i].Base = Unsafe.AsPointer(ref MemoryMarshal.GetReference(segments[i].Span));
                    iov[i].Length = (nuint)segments[i].Length;
                }
                int first = 0;
                while (first < n)
                {
                    nint r = Vmsplice(fd, iov + first, (nuint)(n - first), SPLICE_F_NONBLOCK);
                    if (r < 0)
                    {
                        int errno = Errno();
                        if (errno == EINTR) continue;
                        if (errno == EPIPE) return false;
                        if (errno != EAGAIN) throw new IOException($"vmsplice into the command's stdin: {StrError(errno)}");
                        // Full: wait for the command to read, but not on a command that has gone (something it started
                        // may hold the pipe without reading).
                        var p = new PollFd { Fd = fd, Events = POLLOUT };
                        Poll(&p, 1, PollMs);
                        if (exited()) return false;
                        cancellationToken.ThrowIfCancellationRequested();
                        ReleaseRead(fd);
                        continue;
                    }
                    Spliced += r;
                    for (nuint left = (nuint)r; left > 0;)
                    {
                        if (iov[first].Length <= left)
                        {
                            left -= iov[first].Length;
                            first++;
                        }
                        else
                        {
                            iov[first].Base = (byte*)iov[first].Base + left;
                            iov[first].Length -= left;
                            left = 0;
                        }
                    }
                }
            }
        }
        finally
        {
            if (added) _pipe.DangerousRelease();
        }
    }

    // Releases the held bytes the command has read: all spliced but what the pipe still holds.
    private void ReleaseRead(int fd)
    {
        int queued;
        if (IoctlInt(fd, FIONREAD, &queued) != 0) return; // keep holding: released at the end
        long read = Spliced - queued;
        if (read >= _released)
        {
            _lender.ReleaseHeld(read - _released); // 0 too: frames without payload at the head go
            _released = read;
        }
    }

    /// <summary>Releases every held segment: only once the pipe is closed and the command has exited (nobody reads its pages any more).</summary>
    public void ReleaseRest()
    {
        _lender.ReleaseHeld(Spliced - _released);
        _released = Spliced;
    }
}
