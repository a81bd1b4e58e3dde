using System.Buffers;
using System.Text;
using Microsoft.Win32.SafeHandles;
using static KaDeploy.Platform.LinuxNative;

namespace KaDeploy.Platform;

/// <summary>
/// Linux file-system calls that report failure as a one-line <see cref="KaDeployException"/>
/// ("lchown /t/etc/shadow: Operation not permitted"). Nothing here follows a final symlink.
/// </summary>
public static unsafe class Posix
{
    /// <summary>Builds the operator-facing error for a failed call.</summary>
    public static KaDeployException Error(string call, string path, int errno) =>
        new($"{call} {path}: {StrError(errno)}");

    private static KaDeployException LastError(string call, string path) => Error(call, path, Errno());

    /// <summary>lstat through statx; throws on any error.</summary>
    public static FileStatus LStat(string path)
    {
        if (!TryLStat(path, out FileStatus st, out int errno))
        {
            throw Error("statx", path, errno);
        }
        return st;
    }

    /// <summary>What statx returned, as the file status the rest of the code reads (one conversion for every stat call).</summary>
    internal static FileStatus ToFileStatus(in LinuxNative.Statx sx) => new(
        (FileKind)(sx.Mode & 0xF000), sx.Mode, sx.Uid, sx.Gid, (long)sx.Size, (long)sx.Blocks, sx.Nlink, sx.Ino,
        sx.DevMajor, sx.DevMinor, sx.RdevMajor, sx.RdevMinor, sx.Mtime.Sec, sx.Mtime.Nsec, sx.Atime.Sec, sx.Atime.Nsec);

    /// <summary>lstat through statx; false with the errno instead of throwing.</summary>
    public static bool TryLStat(string path, out FileStatus status, out int errno)
    {
        if (StatxCall(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT, STATX_BASIC_STATS, out Statx sx) != 0)
        {
            errno = Errno();
            status = default;
            return false;
        }
        errno = 0;
        status = ToFileStatus(sx);
        return true;
    }

    /// <summary>Opens an existing file for reading without following a final symlink.</summary>
    public static SafeFileHandle OpenRead(string path)
    {
        int fd = Open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
        return fd < 0 ? throw LastError("open", path) : new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>Opens a directory (not through a symlink), e.g. for <see cref="SyncFileSystem"/>.</summary>
    public static SafeFileHandle OpenDirectory(string path)
    {
        int fd = Open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
        return fd < 0 ? throw LastError("open", path) : new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>Creates a new regular file; fails if anything (even a dangling symlink) exists at the path.</summary>
    public static SafeFileHandle CreateExclusive(string path, uint mode)
    {
        int fd = Open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        return fd < 0 ? throw LastError("open", path) : new SafeFileHandle(fd, ownsHandle: true);
    }

    public static void LChown(string path, uint uid, uint gid)
    {
        if (Lchown(path, uid, gid) != 0) throw LastError("lchown", path);
    }

    public static void FChown(SafeFileHandle fd, string path, uint uid, uint gid)
    {
        if (Fchown((int)fd.DangerousGetHandle(), uid, gid) != 0) throw LastError("fchown", path);
    }

    /// <summary>chmod; the caller guarantees <paramref name="path"/> is not a symlink.</summary>
    public static void ChangeMode(string path, uint mode)
    {
        if (Chmod(path, mode & 0xFFF) != 0) throw LastError("chmod", path);
    }

    public static void FChangeMode(SafeFileHandle fd, string path, uint mode)
    {
        if (Fchmod((int)fd.DangerousGetHandle(), mode & 0xFFF) != 0) throw LastError("fchmod", path);
    }

    public static void MakeDirectory(string path, uint mode)
    {
        if (Mkdir(path, mode) != 0) throw LastError("mkdir", path);
    }

    /// <summary>Removes a non-directory or an empty directory; true if something was removed.</summary>
    public static bool Remove(string path, bool isDirectory)
    {
        int rc = isDirectory ? Rmdir(path) : Unlink(path);
        if (rc == 0) return true;
        int errno = Errno();
        return errno == ENOENT ? false : throw Error(isDirectory ? "rmdir" : "unlink", path, errno);
    }

    public static void MakeNode(string path, FileKind kind, uint mode, uint major, uint minor)
    {
        int rc = kind == FileKind.Fifo
            ? Mkfifo(path, mode & 0xFFF)
            : Mknod(path, (uint)kind | (mode & 0xFFF), MakeDev(major, minor));
        if (rc != 0) throw LastError(kind == FileKind.Fifo ? "mkfifo" : "mknod", path);
    }

    public static void MakeSymlink(string target, string path)
    {
        if (Symlink(target, path) != 0) throw LastError("symlink", path);
    }

    public static void MakeHardLink(string existing, string path)
    {
        if (Link(existing, path) != 0) throw Error("link", $"{path} => {existing}", Errno());
    }

    /// <summary>readlink; the target verbatim.</summary>
    public static string ReadLink(string path)
    {
        int size = 256;
        while (true)
        {
            byte[] buf = ArrayPool<byte>.Shared.Rent(size);
            try
            {
                nint n;
                fixed (byte* p = buf)
                {
                    n = Readlink(path, p, buf.Length);
                }
                if (n < 0) throw LastError("readlink", path);
                if (n < buf.Length) return Encoding.UTF8.GetString(buf, 0, (int)n);
                size = buf.Length * 2;
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buf);
            }
        }
    }

    /// <summary>Sets mtime with nanoseconds (atime too, unless null), never following a symlink.</summary>
    public static void SetTimes(string path, long mtimeSec, uint mtimeNsec, long? atimeSec = null, uint atimeNsec = 0)
    {
        Timespec* t = stackalloc Timespec[2];
        t[0] = atimeSec is long a ? new Timespec { Sec = a, Nsec = atimeNsec } : new Timespec { Nsec = UTIME_OMIT };
        t[1] = new Timespec { Sec = mtimeSec, Nsec = mtimeNsec };
        if (Utimensat(AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW) != 0) throw LastError("utimensat", path);
    }

    /// <summary>Names of the extended attributes of a path (not followed); empty where the file system has none.</summary>
    public static List<string> ListXattrs(string path)
    {
        var names = new List<string>();
        nint size = Llistxattr(path, null, 0);
        if (size < 0)
        {
            int errno = Errno();
            return errno is EOPNOTSUPP ? names : throw Error("llistxattr", path, errno);
        }
        if (size == 0) return names;
        while (true)
        {
            byte[] buf = ArrayPool<byte>.Shared.Rent((int)size);
            try
            {
                nint n;
                fixed (byte* p = buf)
                {
                    n = Llistxattr(path, p, buf.Length);
                }
                if (n < 0)
                {
                    int errno = Errno();
                    if (errno == ERANGE) { size = buf.Length * 2; continue; }
                    throw Error("llistxattr", path, errno);
                }
                var span = buf.AsSpan(0, (int)n);
                while (!span.IsEmpty)
                {
                    int end = span.IndexOf((byte)0);
                    if (end < 0) end = span.Length;
                    if (end > 0) names.Add(Encoding.UTF8.GetString(span[..end]));
                    span = end < span.Length ? span[(end + 1)..] : default;
                }
                names.Sort(StringComparer.Ordinal);
                return names;
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buf);
            }
        }
    }

    /// <summary>The binary value of one extended attribute, or null if it vanished.</summary>
    public static byte[]? GetXattr(string path, string name)
    {
        while (true)
        {
            nint size = Lgetxattr(path, name, null, 0);
            if (size < 0)
            {
                int errno = Errno();
                return errno == ENODATA ? null : throw Error("lgetxattr", path, errno);
            }
            var value = new byte[size];
            nint n;
            fixed (byte* p = value)
            {
                n = Lgetxattr(path, name, p, value.Length);
            }
            if (n >= 0) return n == size ? value : value[..(int)n];
            int e = Errno();
            if (e != ERANGE) throw Error("lgetxattr", path, e);
        }
    }

    /// <summary>Sets one extended attribute on a path (not followed); returns the errno (0 on success).</summary>
    public static int TrySetXattr(string path, string name, ReadOnlySpan<byte> value)
    {
        fixed (byte* p = value)
        {
            return Lsetxattr(path, name, p, value.Length, 0) == 0 ? 0 : Errno();
        }
    }

    /// <summary>
    /// The data segments (offset, length) of an open file, found with SEEK_DATA/SEEK_HOLE, up to <paramref name="size"/>.
    /// A file system without hole support reports one segment covering the file.
    /// </summary>
    public static List<(long Offset, long Length)> DataSegments(SafeFileHandle fd, long size)
    {
        var segments = new List<(long, long)>();
        int h = (int)fd.DangerousGetHandle();
        long pos = 0;
        while (pos < size)
        {
            long data = Lseek(h, pos, SEEK_DATA);
            if (data < 0)
            {
                int errno = Errno();
                if (errno == ENXIO) break; // only a hole up to EOF
                segments.Clear();
                segments.Add((0, size));
                return segments;
            }
            if (data >= size) break;
            long hole = Lseek(h, data, SEEK_HOLE);
            if (hole < 0 || hole > size) hole = size;
            segments.Add((data, hole - data));
            pos = hole;
        }
        return segments;
    }

    public static void Truncate(SafeFileHandle fd, string path, long length)
    {
        if (Ftruncate((int)fd.DangerousGetHandle(), length) != 0) throw LastError("ftruncate", path);
    }

    public static void FSync(SafeFileHandle fd, string path)
    {
        if (Fsync((int)fd.DangerousGetHandle()) != 0) throw LastError("fsync", path);
    }

    /// <summary>syncfs on the file system holding <paramref name="directory"/>.</summary>
    public static void SyncFileSystem(string directory)
    {
        // The target may be given through a symlink (the operator's choice), so this open follows it.
        int raw = Open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (raw < 0) throw LastError("open", directory);
        using var fd = new SafeFileHandle(raw, ownsHandle: true);
        if (Syncfs((int)fd.DangerousGetHandle()) != 0) throw LastError("syncfs", directory);
    }

    /// <summary>True when the process runs as root (can chown and mknod devices).</summary>
    public static bool IsRoot => Environment.IsPrivilegedProcess;
}
