using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace KaDeploy.Payloads.Block;

/// <summary>
/// The few Linux calls the block payloads need and .NET does not expose. Kept private to this folder so the block
/// code does not depend on the shared platform layer being written in parallel.
/// </summary>
internal static partial class BlockNative
{
    // Request numbers from <linux/fs.h>; the _IOR encoding is the same on x86-64 and arm64.
    private const nuint BLKGETSIZE64 = 0x80081272; // _IOR(0x12, 114, size_t)
    private const nuint BLKZEROOUT = 0x127F;       // _IO(0x12, 127), arg uint64_t[2] = { start, length }
    private const nuint BLKSSZGET = 0x1268;        // _IO(0x12, 104), logical sector size, int

    private const int SEEK_END = 2;
    private const int SEEK_DATA = 3;
    private const int SEEK_HOLE = 4;
    private const int EINTR = 4;
    private const int ENXIO = 6;
    private const int EBUSY = 16;

    // <asm-generic/fcntl.h>, shared by x86-64 and arm64.
    private const int O_RDWR = 0x2;
    private const int O_EXCL = 0x80;
    private const int O_CLOEXEC = 0x80000;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int IoctlUInt64(int fd, nuint request, out ulong value);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int IoctlInt32(int fd, nuint request, out int value);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static unsafe partial int IoctlRange(int fd, nuint request, ulong* range);

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long LSeek(int fd, long offset, int whence);

    [LibraryImport("libc", EntryPoint = "pwritev", SetLastError = true)]
    private static unsafe partial nint PWriteV(int fd, IoVector* iov, int count, long offset);

    [StructLayout(LayoutKind.Sequential)]
    private unsafe struct IoVector
    {
        public byte* Base;
        public nuint Length;
    }

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int FSync(int fd);

    /// <summary>
    /// Opens an existing file or block device read-write with O_EXCL. Linux gives O_EXCL without O_CREAT a meaning
    /// only for block devices: the open fails with EBUSY while the device (or, for a whole disk, one of its
    /// partitions) is mounted or held by another exclusive opener, which is how mkfs refuses to format a disk in
    /// use (open(2)). For a regular file the flag is ignored.
    /// </summary>
    public static SafeFileHandle OpenExclusiveForWrite(string path)
    {
        int fd = Open(path, O_RDWR | O_EXCL | O_CLOEXEC);
        if (fd >= 0) return new SafeFileHandle(fd, ownsHandle: true);
        int errno = Marshal.GetLastPInvokeError();
        if (errno == EBUSY)
            throw new KaDeployException($"target {path} is in use (mounted, or held by another program); refusing to write to it");
        throw new KaDeployException($"cannot open {path} for writing: {Marshal.GetPInvokeErrorMessage(errno)}");
    }

    private static int Fd(SafeFileHandle handle) => (int)handle.DangerousGetHandle();

    /// <summary>The size of a block device in bytes; false (ENOTTY) when the handle is not a block device.</summary>
    public static bool TryGetBlockDeviceSize(SafeFileHandle handle, out long size)
    {
        if (IoctlUInt64(Fd(handle), BLKGETSIZE64, out ulong bytes) == 0)
        {
            size = (long)bytes;
            return true;
        }
        size = 0;
        return false;
    }

    /// <summary>The logical sector size of a block device (512 when the kernel will not say).</summary>
    public static int GetLogicalSectorSize(SafeFileHandle handle) =>
        IoctlInt32(Fd(handle), BLKSSZGET, out int size) == 0 && size > 0 ? size : 512;

    /// <summary>Length by seeking to the end; for files that are neither regular nor block devices.</summary>
    public static long SeekEnd(SafeFileHandle handle)
    {
        long end = LSeek(Fd(handle), 0, SEEK_END);
        if (end < 0) throw new KaDeployException($"cannot find the length of the source: {Marshal.GetLastPInvokeErrorMessage()}");
        return end;
    }

    /// <summary>
    /// The next data extent at or after <paramref name="from"/> of a regular file: true with [start, end), or false
    /// when only a hole remains. A file system without SEEK_DATA support reports the whole rest as data.
    /// </summary>
    public static bool TryNextDataExtent(SafeFileHandle handle, long from, long length, out long start, out long end)
    {
        start = end = 0;
        if (from >= length) return false;
        int fd = Fd(handle);
        long data = LSeek(fd, from, SEEK_DATA);
        if (data < 0)
        {
            if (Marshal.GetLastPInvokeError() == ENXIO) return false;
            start = from;
            end = length;
            return true;
        }
        if (data >= length) return false;
        long hole = LSeek(fd, data, SEEK_HOLE);
        start = data;
        end = hole < 0 || hole > length ? length : hole;
        return true;
    }

    /// <summary>Asks the device to make [offset, offset + length) read as zeros; false if it cannot.</summary>
    public static unsafe bool TryZeroOut(SafeFileHandle handle, long offset, long length)
    {
        ulong* range = stackalloc ulong[2];
        range[0] = (ulong)offset;
        range[1] = (ulong)length;
        return IoctlRange(Fd(handle), BLKZEROOUT, range) == 0;
    }

    /// <summary>fsync(2): returns once the kernel has written the file's (or device's) data to storage.</summary>
    public static void Sync(SafeFileHandle handle, string path)
    {
        if (FSync(Fd(handle)) != 0)
            throw new KaDeployException($"fsync {path} failed: {Marshal.GetLastPInvokeErrorMessage()}");
    }

    /// <summary>
    /// pwritev(2) of <paramref name="first"/> then <paramref name="second"/> at <paramref name="offset"/>, all of
    /// both (a short write is resumed); on failure the message of errno, naming <paramref name="path"/> and the
    /// offset the failed call began at.
    /// </summary>
    public static unsafe void WriteAt(SafeFileHandle handle, ReadOnlySpan<byte> first, ReadOnlySpan<byte> second, long offset, string path)
    {
        fixed (byte* a = first)
        fixed (byte* b = second)
        {
            IoVector* iov = stackalloc IoVector[2];
            iov[0] = new IoVector { Base = a, Length = (nuint)first.Length };
            iov[1] = new IoVector { Base = b, Length = (nuint)second.Length };
            int index = first.IsEmpty ? 1 : 0;
            if (second.IsEmpty && index == 1) return;
            int fd = Fd(handle);
            while (index < 2)
            {
                nint n = PWriteV(fd, iov + index, 2 - index, offset);
                if (n < 0)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    if (errno == EINTR) continue;
                    throw new KaDeployException($"writing {path} at offset {offset} failed: {Marshal.GetPInvokeErrorMessage(errno)}");
                }
                if (n == 0) throw new KaDeployException($"writing {path} at offset {offset} failed: the kernel wrote nothing");
                offset += n;
                // Skip what was written: whole vectors, then part of the next.
                while (index < 2 && (nuint)n >= iov[index].Length)
                {
                    n -= (nint)iov[index].Length;
                    index++;
                }
                if (index < 2)
                {
                    iov[index].Base += n;
                    iov[index].Length -= (nuint)n;
                }
            }
        }
    }
}
