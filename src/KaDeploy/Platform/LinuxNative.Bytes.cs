using System.Runtime.InteropServices;

namespace KaDeploy.Platform;

/// <summary>
/// Entry points that take names as raw NUL-terminated bytes and work relative to a directory fd. Linux names are
/// bytes, not text: a name that is not valid UTF-8 must reach the kernel unchanged, so nothing here marshals a
/// string. See <see cref="PosixAt"/> for the checked wrappers.
/// </summary>
internal static unsafe partial class LinuxNative
{
    internal const int AT_EMPTY_PATH = 0x1000;
    internal const int O_PATH = 0x200000;
    internal const int ELOOP = 40;
    internal const int ENOTDIR = 20;
    internal const int EISDIR = 21;
    internal const int ENOTEMPTY = 39;
    internal const int EINTR = 4;
    internal const int EIO = 5;
    internal const int S_ISGID = 0x400;

    [LibraryImport(Libc, EntryPoint = "statx", SetLastError = true)]
    internal static partial int StatxAt(int dirfd, byte* path, int flags, uint mask, out Statx buf);

    [LibraryImport(Libc, EntryPoint = "openat", SetLastError = true)]
    internal static partial int OpenAt(int dirfd, byte* path, int flags, uint mode);

    [LibraryImport(Libc, EntryPoint = "mkdirat", SetLastError = true)]
    internal static partial int MkdirAt(int dirfd, byte* path, uint mode);

    [LibraryImport(Libc, EntryPoint = "unlinkat", SetLastError = true)]
    internal static partial int UnlinkAt(int dirfd, byte* path, int flags);

    [LibraryImport(Libc, EntryPoint = "symlinkat", SetLastError = true)]
    internal static partial int SymlinkAt(byte* target, int dirfd, byte* path);

    [LibraryImport(Libc, EntryPoint = "linkat", SetLastError = true)]
    internal static partial int LinkAt(int olddirfd, byte* oldpath, int newdirfd, byte* newpath, int flags);

    [LibraryImport(Libc, EntryPoint = "mknodat", SetLastError = true)]
    internal static partial int MknodAt(int dirfd, byte* path, uint mode, ulong dev);

    [LibraryImport(Libc, EntryPoint = "fchownat", SetLastError = true)]
    internal static partial int FchownAt(int dirfd, byte* path, uint owner, uint group, int flags);

    [LibraryImport(Libc, EntryPoint = "fchmodat", SetLastError = true)]
    internal static partial int FchmodAt(int dirfd, byte* path, uint mode, int flags);

    [LibraryImport(Libc, EntryPoint = "utimensat", SetLastError = true)]
    internal static partial int UtimensAt(int dirfd, byte* path, Timespec* times, int flags);

    [LibraryImport(Libc, EntryPoint = "futimens", SetLastError = true)]
    internal static partial int Futimens(int fd, Timespec* times);

    [LibraryImport(Libc, EntryPoint = "readlinkat", SetLastError = true)]
    internal static partial nint ReadlinkAt(int dirfd, byte* path, byte* buf, nint size);

    [LibraryImport(Libc, EntryPoint = "fsetxattr", SetLastError = true)]
    internal static partial int Fsetxattr(int fd, byte* name, byte* value, nint size, int flags);

    [LibraryImport(Libc, EntryPoint = "lsetxattr", SetLastError = true)]
    internal static partial int LsetxattrBytes(byte* path, byte* name, byte* value, nint size, int flags);

    [LibraryImport(Libc, EntryPoint = "lremovexattr", SetLastError = true)]
    internal static partial int LremovexattrBytes(byte* path, byte* name);

    [LibraryImport(Libc, EntryPoint = "llistxattr", SetLastError = true)]
    internal static partial nint LlistxattrBytes(byte* path, byte* list, nint size);

    [LibraryImport(Libc, EntryPoint = "lgetxattr", SetLastError = true)]
    internal static partial nint LgetxattrBytes(byte* path, byte* name, byte* value, nint size);

    [LibraryImport(Libc, EntryPoint = "flistxattr", SetLastError = true)]
    internal static partial nint Flistxattr(int fd, byte* list, nint size);

    [LibraryImport(Libc, EntryPoint = "fgetxattr", SetLastError = true)]
    internal static partial nint Fgetxattr(int fd, byte* name, byte* value, nint size);

    // listxattrat(2) and getxattrat(2) (Linux 6.13): the xattrs of a name under a directory fd, not followed, so a
    // file that needs no data read needs no open either (issue 14). glibc has no wrappers yet; the numbers are the
    // same on every architecture (the unified table). Every argument is passed as a full register.
    internal const nint SYS_getxattrat = 464;
    internal const nint SYS_listxattrat = 465;
    internal const int ENOSYS = 38;

    [LibraryImport(Libc, EntryPoint = "syscall", SetLastError = true)]
    internal static partial nint SyscallListxattrat(nint number, nint dirfd, byte* path, nint atFlags, byte* list, nint size);

    [LibraryImport(Libc, EntryPoint = "syscall", SetLastError = true)]
    internal static partial nint SyscallGetxattrat(nint number, nint dirfd, byte* path, nint atFlags, byte* name, XattrArgs* args, nint argsSize);

    /// <summary>struct xattr_args of getxattrat(2).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct XattrArgs
    {
        public ulong Value;
        public uint Size;
        public uint Flags;
    }

    [LibraryImport(Libc, EntryPoint = "fstatfs", SetLastError = true)]
    internal static partial int Fstatfs(int fd, byte* buf);

    // Raw pread/pwrite on an int fd: RandomAccess on a SafeFileHandle made from an fd costs an lseek per handle
    // (its seekability check), one syscall per small file on both sides of a many-file tree.
    [LibraryImport(Libc, EntryPoint = "pread", SetLastError = true)]
    internal static partial nint Pread(int fd, byte* buf, nint count, long offset);

    [LibraryImport(Libc, EntryPoint = "pwrite", SetLastError = true)]
    internal static partial nint Pwrite(int fd, byte* buf, nint count, long offset);

    [LibraryImport(Libc, EntryPoint = "geteuid")]
    internal static partial uint Geteuid();

    [LibraryImport(Libc, EntryPoint = "getegid")]
    internal static partial uint Getegid();

    // glibc 2.30 and later (Debian 11 has 2.31).
    [LibraryImport(Libc, EntryPoint = "getdents64", SetLastError = true)]
    internal static partial nint Getdents64(int fd, byte* buffer, nint count);

    [LibraryImport(Libc, EntryPoint = "getpwnam_r")]
    internal static partial int GetpwnamR(byte* name, byte* pwd, byte* buf, nint buflen, byte** result);

    [LibraryImport(Libc, EntryPoint = "getgrnam_r")]
    internal static partial int GetgrnamR(byte* name, byte* grp, byte* buf, nint buflen, byte** result);

    [LibraryImport(Libc, EntryPoint = "fcntl", SetLastError = true)]
    private static partial int FcntlDup(int fd, int cmd, int arg);

    /// <summary>A close-on-exec duplicate of <paramref name="fd"/> (F_DUPFD_CLOEXEC); -1 on failure.</summary>
    internal static int Fcntl(int fd) => FcntlDup(fd, 1030, 0);

    /// <summary>Offset of d_name in struct dirent64 (d_ino 8, d_off 8, d_reclen 2, d_type 1).</summary>
    internal const int DirentNameOffset = 19;
}
