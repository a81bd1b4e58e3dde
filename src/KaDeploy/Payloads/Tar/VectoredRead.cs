using System.Buffers;
using System.Runtime.InteropServices;

namespace KaDeploy.Payloads.Tar;

/// <summary>
/// preadv(2) into several lent pieces at once: the tree source fills a run of ring slots (about 1 MiB) with one system
/// call instead of one pread per 64 KiB frame (issue 14).
/// </summary>
internal static unsafe partial class VectoredRead
{
    /// <summary>Most pieces one call takes (a ring segment's slots).</summary>
    public const int MaxPieces = 16;

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVec
    {
        public byte* Base;
        public nuint Length;
    }

    [LibraryImport("libc", EntryPoint = "preadv", SetLastError = true)]
    private static partial nint Preadv(int fd, IoVec* iov, int iovcnt, long offset);

    /// <summary>
    /// Reads up to <paramref name="count"/> bytes at <paramref name="offset"/> into the pieces in order (each filled
    /// before the next gets a byte, as preadv does); bytes read, or -1 with errno.
    /// </summary>
    public static int Read(int fd, ReadOnlySpan<Memory<byte>> pieces, int count, long offset, out int errno)
    {
        if (pieces.Length is 0 or > MaxPieces) throw new ArgumentOutOfRangeException(nameof(pieces));
        IoVec* iov = stackalloc IoVec[MaxPieces];
        Span<MemoryHandle> pins = new MemoryHandle[pieces.Length]; // Memory.Pin: the pieces need not come from pinned arrays
        int n = 0;
        try
        {
            for (int left = count; n < pieces.Length && left > 0; n++)
            {
                int len = Math.Min(left, pieces[n].Length);
                pins[n] = pieces[n].Pin();
                iov[n] = new IoVec { Base = (byte*)pins[n].Pointer, Length = (nuint)len };
                left -= len;
            }
            nint got = Preadv(fd, iov, n, offset);
            errno = got < 0 ? Marshal.GetLastSystemError() : 0;
            return (int)got;
        }
        finally
        {
            for (int i = 0; i < n; i++) pins[i].Dispose();
        }
    }
}
