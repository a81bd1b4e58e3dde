using System.Buffers;
using System.Runtime.InteropServices;

namespace KaDeploy.Platform;

/// <summary>
/// Gathered writes into a pipe (issue 10): a command sink hands a run of lent ring frames to its command's stdin with
/// one writev(2) instead of one write per frame. The descriptor is made non-blocking: a full pipe returns EAGAIN
/// (<see cref="PipeGather.TryWrite"/> says 0) and the caller waits for room the way it already does, through its
/// <see cref="System.IO.Pipes.PipeStream"/>, so that the command's exit still stops the wait.
/// </summary>
internal static unsafe partial class LinuxNative
{
    internal const int EAGAIN = 11;
    internal const int EPIPE = 32;
    internal const int F_GETFL = 3;
    internal const int F_SETFL = 4;
    internal const int O_NONBLOCK = 0x800;

    /// <summary>struct iovec.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Iovec
    {
        public byte* Base;
        public nuint Length;
    }

    [LibraryImport(Libc, EntryPoint = "writev", SetLastError = true)]
    internal static partial nint Writev(SafeHandle fd, Iovec* iov, int iovcnt);

    [LibraryImport(Libc, EntryPoint = "fcntl", SetLastError = true)]
    internal static partial int FcntlInt(SafeHandle fd, int command, int argument);
}

/// <summary>Checked wrappers over <see cref="LinuxNative.Writev"/> for a pipe.</summary>
internal static unsafe class PipeGather
{
    /// <summary>Most segments one call takes (each is one iovec on the stack).</summary>
    public const int MaxSegments = 64;

    /// <summary>Makes <paramref name="fd"/> non-blocking (a full pipe then answers EAGAIN instead of blocking the thread).</summary>
    public static void SetNonBlocking(SafeHandle fd)
    {
        int flags = LinuxNative.FcntlInt(fd, LinuxNative.F_GETFL, 0);
        if (flags < 0 || LinuxNative.FcntlInt(fd, LinuxNative.F_SETFL, flags | LinuxNative.O_NONBLOCK) < 0)
            throw new IOException("fcntl O_NONBLOCK: " + LinuxNative.StrError(LinuxNative.Errno()));
    }

    /// <summary>
    /// Writes as much of <paramref name="segments"/> as the pipe takes now, the first one from
    /// <paramref name="skip"/> on, with one writev(2): the bytes written, 0 when the pipe is full (EAGAIN). A reader
    /// that has gone (EPIPE) or any other error throws an <see cref="IOException"/>.
    /// </summary>
    public static long TryWrite(SafeHandle fd, ReadOnlySpan<ReadOnlyMemory<byte>> segments, int skip)
    {
        int count = Math.Min(segments.Length, MaxSegments);
        var iov = stackalloc LinuxNative.Iovec[count];
        var pins = new PinSet();
        try
        {
            for (int i = 0; i < count; i++)
            {
                var segment = i == 0 ? segments[0][skip..] : segments[i];
                MemoryHandle pin = segment.Pin();
                pins.Add(pin);
                iov[i] = new LinuxNative.Iovec { Base = (byte*)pin.Pointer, Length = (nuint)segment.Length };
            }
            while (true)
            {
                nint n = LinuxNative.Writev(fd, iov, count);
                if (n >= 0) return n;
                int errno = LinuxNative.Errno();
                if (errno == LinuxNative.EINTR) continue;
                if (errno == LinuxNative.EAGAIN) return 0;
                throw new IOException("writev: " + LinuxNative.StrError(errno), errno);
            }
        }
        finally
        {
            pins.Dispose();
        }
    }

    // The pins of one call (GC handles, no heap allocation), held for the call's length only.
    private struct PinSet : IDisposable
    {
        private PinBuffer _pins;
        private int _count;

        public void Add(MemoryHandle pin) => _pins[_count++] = pin;

        public void Dispose()
        {
            for (int i = 0; i < _count; i++) _pins[i].Dispose();
            _count = 0;
        }
    }

    [System.Runtime.CompilerServices.InlineArray(MaxSegments)]
    private struct PinBuffer
    {
        private MemoryHandle _element;
    }
}
