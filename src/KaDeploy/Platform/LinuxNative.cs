using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace KaDeploy.Platform;

/// <summary>
/// Raw libc entry points (source-generated, AOT-safe). Callers use <see cref="Posix"/>, which turns
/// errors into one-line <see cref="KaDeployException"/>s. Layouts assume 64-bit Linux (x86_64, arm64).
/// </summary>
internal static unsafe partial class LinuxNative
{
    private const string Libc = "libc";

    internal const int AT_FDCWD = -100;
    internal const int AT_SYMLINK_NOFOLLOW = 0x100;
    internal const int AT_REMOVEDIR = 0x200;
    internal const int AT_STATX_SYNC_AS_STAT = 0;
    internal const uint STATX_BASIC_STATS = 0x7ff;

    internal const int O_RDONLY = 0;
    internal const int O_WRONLY = 1;
    internal const int O_CREAT = 0x40;
    internal const int O_EXCL = 0x80;
    internal const int O_NOFOLLOW = 0x20000;
    internal const int O_DIRECTORY = 0x10000;
    internal const int O_CLOEXEC = 0x80000;

    internal const int SEEK_DATA = 3;
    internal const int SEEK_HOLE = 4;

    internal const long UTIME_OMIT = (1L << 30) - 2;

    internal const int ENOENT = 2;
    internal const int EPERM = 1;
    internal const int ENXIO = 6;
    internal const int EEXIST = 17;
    internal const int ENODATA = 61;
    internal const int EOPNOTSUPP = 95;
    internal const int ERANGE = 34;

    [StructLayout(LayoutKind.Sequential)]
    internal struct StatxTimestamp
    {
        public long Sec;
        public uint Nsec;
        public int Reserved;
    }

    /// <summary>struct statx from linux/stat.h: 256 bytes, the same on every architecture.</summary>
    [StructLayout(LayoutKind.Sequential, Size = 256)]
    internal struct Statx
    {
        public uint Mask;
        public uint Blksize;
        public ulong Attributes;
        public uint Nlink;
        public uint Uid;
        public uint Gid;
        public ushort Mode;
        public ushort Spare0;
        public ulong Ino;
        public ulong Size;
        public ulong Blocks;
        public ulong AttributesMask;
        public StatxTimestamp Atime;
        public StatxTimestamp Btime;
        public StatxTimestamp Ctime;
        public StatxTimestamp Mtime;
        public uint RdevMajor;
        public uint RdevMinor;
        public uint DevMajor;
        public uint DevMinor;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct Timespec
    {
        public long Sec;
        public long Nsec;
    }

    [LibraryImport(Libc, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int StatxCall(int dirfd, string path, int flags, uint mask, out Statx buf);

    [LibraryImport(Libc, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Open(string path, int flags, uint mode);

    [LibraryImport(Libc, EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(int fd);

    [LibraryImport(Libc, EntryPoint = "lchown", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Lchown(string path, uint owner, uint group);

    [LibraryImport(Libc, EntryPoint = "fchown", SetLastError = true)]
    internal static partial int Fchown(int fd, uint owner, uint group);

    [LibraryImport(Libc, EntryPoint = "chmod", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Chmod(string path, uint mode);

    [LibraryImport(Libc, EntryPoint = "fchmod", SetLastError = true)]
    internal static partial int Fchmod(int fd, uint mode);

    [LibraryImport(Libc, EntryPoint = "mkdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Mkdir(string path, uint mode);

    [LibraryImport(Libc, EntryPoint = "rmdir", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Rmdir(string path);

    [LibraryImport(Libc, EntryPoint = "unlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Unlink(string path);

    [LibraryImport(Libc, EntryPoint = "mknod", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Mknod(string path, uint mode, ulong dev);

    [LibraryImport(Libc, EntryPoint = "mkfifo", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Mkfifo(string path, uint mode);

    [LibraryImport(Libc, EntryPoint = "symlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Symlink(string target, string linkPath);

    [LibraryImport(Libc, EntryPoint = "link", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Link(string existing, string newPath);

    [LibraryImport(Libc, EntryPoint = "readlink", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial nint Readlink(string path, byte* buf, nint size);

    [LibraryImport(Libc, EntryPoint = "utimensat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Utimensat(int dirfd, string path, Timespec* times, int flags);

    [LibraryImport(Libc, EntryPoint = "llistxattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial nint Llistxattr(string path, byte* list, nint size);

    [LibraryImport(Libc, EntryPoint = "lgetxattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial nint Lgetxattr(string path, string name, byte* value, nint size);

    [LibraryImport(Libc, EntryPoint = "lsetxattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Lsetxattr(string path, string name, byte* value, nint size, int flags);

    [LibraryImport(Libc, EntryPoint = "lseek", SetLastError = true)]
    internal static partial long Lseek(int fd, long offset, int whence);

    [LibraryImport(Libc, EntryPoint = "ftruncate", SetLastError = true)]
    internal static partial int Ftruncate(int fd, long length);

    [LibraryImport(Libc, EntryPoint = "fsync", SetLastError = true)]
    internal static partial int Fsync(int fd);

    [LibraryImport(Libc, EntryPoint = "syncfs", SetLastError = true)]
    internal static partial int Syncfs(int fd);

    internal const int EAGAIN = 11;
    internal const int EPIPE = 32;
    internal const uint SPLICE_F_NONBLOCK = 2;
    internal const short POLLOUT = 4;
    internal const ulong FIONREAD = 0x541B;

    [StructLayout(LayoutKind.Sequential)]
    internal struct Iovec
    {
        public void* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    internal struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    /// <summary>vmsplice(2): the pipe takes references to the pages, not a copy of the bytes.</summary>
    [LibraryImport(Libc, EntryPoint = "vmsplice", SetLastError = true)]
    internal static partial nint Vmsplice(int fd, Iovec* iov, nuint count, uint flags);

    [LibraryImport(Libc, EntryPoint = "poll", SetLastError = true)]
    internal static partial int Poll(PollFd* fds, nuint count, int timeoutMs);

    /// <summary>ioctl(2) with an int out-argument (FIONREAD).</summary>
    [LibraryImport(Libc, EntryPoint = "ioctl", SetLastError = true)]
    internal static partial int IoctlInt(int fd, ulong request, int* value);

    [LibraryImport(Libc, EntryPoint = "strerror_r")]
    internal static partial byte* StrerrorR(int errnum, byte* buf, nint buflen);

    internal static ulong MakeDev(uint major, uint minor) =>
        ((ulong)(major & 0xfffff000u) << 32) | ((ulong)(major & 0xfffu) << 8) |
        ((ulong)(minor & 0xffffff00u) << 12) | (minor & 0xffu);

    internal static string StrError(int errno)
    {
        // glibc exports the GNU strerror_r, which returns a pointer that may or may not be our buffer.
        byte* buf = stackalloc byte[256];
        byte* msg = StrerrorR(errno, buf, 256);
        return msg == null ? $"errno {errno}" : Marshal.PtrToStringUTF8((nint)msg) ?? $"errno {errno}";
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Errno() => Marshal.GetLastPInvokeError();
}
