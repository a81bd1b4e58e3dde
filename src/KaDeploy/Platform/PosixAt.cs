using System.Buffers;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using static KaDeploy.Platform.LinuxNative;

namespace KaDeploy.Platform;

/// <summary>
/// Directory-fd-relative Linux calls on names given as bytes. Each returns 0 or the errno (callers word the error
/// with the archive entry's name), never follows a final symlink unless stated, and never decodes a name as text.
/// An extractor that walks with these (openat with O_NOFOLLOW one component at a time) cannot be led outside
/// its target by a symlink, whatever the archive or a concurrent process planted.
/// </summary>
internal static unsafe class PosixAt
{
    /// <summary>A NUL-terminated copy of <paramref name="name"/> (the kernel's calling convention).</summary>
    internal static byte[] Z(ReadOnlySpan<byte> name)
    {
        var z = new byte[name.Length + 1];
        name.CopyTo(z);
        return z;
    }

    // Room for any single name (NAME_MAX is 255) and its NUL on the stack: a walk of millions of entries makes no
    // garbage for the names it hands the kernel. Longer input (a whole path) goes to the heap.
    private const int ZStack = 256;

    /// <summary>A NUL-terminated copy of <paramref name="name"/> in <paramref name="scratch"/> when it fits, else on the heap.</summary>
    internal static ReadOnlySpan<byte> Z(ReadOnlySpan<byte> name, Span<byte> scratch)
    {
        if (name.Length >= scratch.Length) return Z(name);
        name.CopyTo(scratch);
        scratch[name.Length] = 0;
        return scratch[..(name.Length + 1)];
    }

    private static int Check(int rc) => rc == 0 ? 0 : Errno();

    /// <summary>Opens directory <paramref name="name"/> under <paramref name="dirfd"/> without following a symlink.</summary>
    public static int OpenDirectory(int dirfd, ReadOnlySpan<byte> name, out int errno)
    {
        fixed (byte* p = Z(name, stackalloc byte[ZStack]))
        {
            int fd = OpenAt(dirfd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
            errno = fd < 0 ? Errno() : 0;
            return fd;
        }
    }

    /// <summary>Opens a directory by full path (bytes), following symlinks only as the operator gave it.</summary>
    public static int OpenDirectoryPath(ReadOnlySpan<byte> path, bool followFinal, out int errno)
    {
        fixed (byte* p = Z(path, stackalloc byte[ZStack]))
        {
            int fd = OpenAt(AT_FDCWD, p, O_RDONLY | O_DIRECTORY | O_CLOEXEC | (followFinal ? 0 : O_NOFOLLOW), 0);
            errno = fd < 0 ? Errno() : 0;
            return fd;
        }
    }

    /// <summary>Creates a new regular file (O_EXCL, O_NOFOLLOW); -1 and the errno on failure.</summary>
    public static SafeFileHandle? CreateFile(int dirfd, ReadOnlySpan<byte> name, uint mode, out int errno)
    {
        fixed (byte* p = Z(name, stackalloc byte[ZStack]))
        {
            int fd = OpenAt(dirfd, p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
            errno = fd < 0 ? Errno() : 0;
            return fd < 0 ? null : new SafeFileHandle(fd, ownsHandle: true);
        }
    }

    /// <summary>Creates a new regular file (O_EXCL, O_NOFOLLOW) and returns its fd; -1 and the errno on failure.</summary>
    public static int CreateFileFd(int dirfd, ReadOnlySpan<byte> name, uint mode, out int errno)
    {
        fixed (byte* p = Z(name, stackalloc byte[ZStack]))
        {
            int fd = OpenAt(dirfd, p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
            errno = fd < 0 ? Errno() : 0;
            return fd;
        }
    }

    /// <summary>Opens an existing file for reading, not through a final symlink; -1 and the errno on failure.</summary>
    public static int OpenReadFd(int dirfd, ReadOnlySpan<byte> name, out int errno)
    {
        fixed (byte* p = Z(name, stackalloc byte[ZStack]))
        {
            int fd = OpenAt(dirfd, p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
            errno = fd < 0 ? Errno() : 0;
            return fd;
        }
    }

    /// <summary>Opens an existing file for reading, not through a final symlink.</summary>
    public static SafeFileHandle? OpenRead(int dirfd, ReadOnlySpan<byte> name, out int errno)
    {
        fixed (byte* p = Z(name, stackalloc byte[ZStack]))
        {
            int fd = OpenAt(dirfd, p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
            errno = fd < 0 ? Errno() : 0;
            return fd < 0 ? null : new SafeFileHandle(fd, ownsHandle: true);
        }
    }

    /// <summary>statx(AT_SYMLINK_NOFOLLOW) of a name under a directory fd; an empty name means the fd itself.</summary>
    public static bool TryStat(int dirfd, ReadOnlySpan<byte> name, out FileStatus status, out int errno)
    {
        int flags = AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT | (name.IsEmpty ? AT_EMPTY_PATH : 0);
        Statx sx;
        int rc;
        fixed (byte* p = Z(name, stackalloc byte[ZStack]))
        {
            rc = StatxAt(dirfd, p, flags, STATX_BASIC_STATS, out sx);
        }
        if (rc != 0)
        {
            errno = Errno();
            status = default;
            return false;
        }
        errno = 0;
        status = Posix.ToFileStatus(sx);
        return true;
    }

    public static int MakeDirectory(int dirfd, ReadOnlySpan<byte> name, uint mode)
    {
        fixed (byte* p = Z(name, stackalloc byte[ZStack])) return Check(MkdirAt(dirfd, p, mode));
    }

    public static int Remove(int dirfd, ReadOnlySpan<byte> name, bool directory)
    {
        fixed (byte* p = Z(name, stackalloc byte[ZStack])) return Check(UnlinkAt(dirfd, p, directory ? AT_REMOVEDIR : 0));
    }

    public static int MakeSymlink(ReadOnlySpan<byte> target, int dirfd, ReadOnlySpan<byte> name)
    {
        fixed (byte* t = Z(target, stackalloc byte[ZStack]))
        fixed (byte* p = Z(name, stackalloc byte[ZStack]))
        {
            return Check(SymlinkAt(t, dirfd, p));
        }
    }

    /// <summary>linkat without AT_SYMLINK_FOLLOW: a symlink is linked as itself, never through.</summary>
    public static int MakeHardLink(int olddirfd, ReadOnlySpan<byte> oldName, int newdirfd, ReadOnlySpan<byte> newName)
    {
        fixed (byte* o = Z(oldName, stackalloc byte[ZStack]))
        fixed (byte* n = Z(newName, stackalloc byte[ZStack]))
        {
            return Check(LinkAt(olddirfd, o, newdirfd, n, 0));
        }
    }

    public static int MakeNode(int dirfd, ReadOnlySpan<byte> name, FileKind kind, uint mode, uint major, uint minor)
    {
        fixed (byte* p = Z(name, stackalloc byte[ZStack]))
        {
            return Check(MknodAt(dirfd, p, (uint)kind | (mode & 0xFFF), kind == FileKind.Fifo ? 0 : MakeDev(major, minor)));
        }
    }

    public static int Chown(int dirfd, ReadOnlySpan<byte> name, uint uid, uint gid)
    {
        int flags = AT_SYMLINK_NOFOLLOW | (name.IsEmpty ? AT_EMPTY_PATH : 0);
        fixed (byte* p = Z(name, stackalloc byte[ZStack])) return Check(FchownAt(dirfd, p, uid, gid, flags));
    }

    /// <summary>fchmodat; the caller guarantees the name is not a symlink (it just created it).</summary>
    public static int Chmod(int dirfd, ReadOnlySpan<byte> name, uint mode)
    {
        fixed (byte* p = Z(name, stackalloc byte[ZStack])) return Check(FchmodAt(dirfd, p, mode & 0xFFF, 0));
    }

    public static int Fchmod(SafeFileHandle fd, uint mode) => Check(LinuxNative.Fchmod((int)fd.DangerousGetHandle(), mode & 0xFFF));

    public static int Fchown(SafeFileHandle fd, uint uid, uint gid) => Check(LinuxNative.Fchown((int)fd.DangerousGetHandle(), uid, gid));

    /// <summary>Sets mtime (atime left alone) of a name, not following a symlink.</summary>
    public static int SetTimes(int dirfd, ReadOnlySpan<byte> name, long sec, uint nsec)
    {
        Timespec* t = stackalloc Timespec[2];
        t[0] = new Timespec { Nsec = UTIME_OMIT };
        t[1] = new Timespec { Sec = sec, Nsec = nsec };
        fixed (byte* p = Z(name, stackalloc byte[ZStack])) return Check(UtimensAt(dirfd, p, t, AT_SYMLINK_NOFOLLOW));
    }

    /// <summary>Sets mtime (atime left alone) of an open file.</summary>
    public static int SetTimes(int fd, long sec, uint nsec)
    {
        Timespec* t = stackalloc Timespec[2];
        t[0] = new Timespec { Nsec = UTIME_OMIT };
        t[1] = new Timespec { Sec = sec, Nsec = nsec };
        return Check(Futimens(fd, t));
    }

    public static int SetXattr(int fd, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
    {
        fixed (byte* n = Z(name, stackalloc byte[ZStack]))
        fixed (byte* v = value)
        {
            return Check(Fsetxattr(fd, n, v, value.Length, 0));
        }
    }

    /// <summary>
    /// Sets an xattr on <paramref name="name"/> under <paramref name="dirfd"/> without following it (a symlink gets
    /// the attribute itself): through /proc/self/fd, so the directory is the one the fd holds, not a path re-walked.
    /// </summary>
    public static int SetXattrAt(int dirfd, ReadOnlySpan<byte> name, ReadOnlySpan<byte> xname, ReadOnlySpan<byte> value)
    {
        byte[] path = ProcPath(dirfd, name);
        fixed (byte* p = path)
        fixed (byte* n = Z(xname, stackalloc byte[ZStack]))
        fixed (byte* v = value)
        {
            return Check(LsetxattrBytes(p, n, v, value.Length, 0));
        }
    }

    /// <summary>Removes an xattr (ENODATA counts as done).</summary>
    public static int RemoveXattrAt(int dirfd, ReadOnlySpan<byte> name, ReadOnlySpan<byte> xname)
    {
        byte[] path = ProcPath(dirfd, name);
        fixed (byte* p = path)
        fixed (byte* n = Z(xname, stackalloc byte[ZStack]))
        {
            int rc = Check(LremovexattrBytes(p, n));
            return rc == ENODATA ? 0 : rc;
        }
    }

    private static byte[] ProcPath(int dirfd, ReadOnlySpan<byte> name)
    {
        string prefix = $"/proc/self/fd/{dirfd}";
        var path = new byte[prefix.Length + (name.IsEmpty ? 0 : 1 + name.Length) + 1];
        Encoding.ASCII.GetBytes(prefix, path);
        if (!name.IsEmpty)
        {
            path[prefix.Length] = (byte)'/';
            name.CopyTo(path.AsSpan(prefix.Length + 1));
        }
        return path;
    }

    /// <summary>readlink of a name under a directory fd: the target's bytes verbatim.</summary>
    public static byte[]? ReadLink(int dirfd, ReadOnlySpan<byte> name, out int errno)
    {
        ReadOnlySpan<byte> z = Z(name, stackalloc byte[ZStack]);
        for (int size = 256; ; size *= 2)
        {
            byte[] buf = ArrayPool<byte>.Shared.Rent(size);
            try
            {
                nint n;
                fixed (byte* p = z)
                fixed (byte* b = buf)
                {
                    n = ReadlinkAt(dirfd, p, b, buf.Length);
                }
                if (n < 0)
                {
                    errno = Errno();
                    return null;
                }
                if (n < buf.Length)
                {
                    errno = 0;
                    return buf.AsSpan(0, (int)n).ToArray();
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buf);
            }
        }
    }

    /// <summary>Names of the xattrs of a path (bytes, not followed), sorted bytewise; null with errno on failure.</summary>
    public static List<byte[]>? ListXattrs(ReadOnlySpan<byte> path, out int errno)
    {
        fixed (byte* p = Z(path, stackalloc byte[ZStack])) return ListXattrs(p, -1, out errno);
    }

    /// <summary>Names of the xattrs of an open file, sorted bytewise; null with errno on failure.</summary>
    public static List<byte[]>? ListXattrs(int fd, out int errno) => ListXattrs(null, fd, out errno);

    // Set once listxattrat/getxattrat turned out missing (a kernel before 6.13, or a seccomp filter that refuses them).
    private static volatile bool s_noXattrAt;

    /// <summary>Whether *xattrat is tried first; tests turn it off to run the by-path fallback of older kernels.</summary>
    internal static bool UseXattrAt
    {
        get => !s_noXattrAt;
        set => s_noXattrAt = !value;
    }

    /// <summary>
    /// Names of the xattrs of <paramref name="name"/> under <paramref name="dirfd"/> (not followed), sorted bytewise,
    /// without opening it; null with errno on failure. Where the kernel lacks listxattrat, the same by
    /// <paramref name="path"/> (llistxattr).
    /// </summary>
    public static List<byte[]>? ListXattrsAt(int dirfd, ReadOnlySpan<byte> name, ReadOnlySpan<byte> path, out int errno)
    {
        if (!s_noXattrAt)
        {
            List<byte[]>? names;
            fixed (byte* p = Z(name, stackalloc byte[ZStack])) names = ListXattrs(p, dirfd, out errno);
            if (names != null || (errno != ENOSYS && errno != EPERM)) return names;
            s_noXattrAt = true;
        }
        return ListXattrs(path, out errno);
    }

    /// <summary>One xattr's value of a name under a directory fd (not followed); by path where getxattrat is missing.</summary>
    public static byte[]? GetXattrAt(int dirfd, ReadOnlySpan<byte> name, ReadOnlySpan<byte> path, ReadOnlySpan<byte> attribute, out int errno)
    {
        if (!s_noXattrAt)
        {
            byte[]? value;
            fixed (byte* p = Z(name, stackalloc byte[ZStack])) value = GetXattr(p, dirfd, attribute, out errno);
            if (value != null || (errno != ENOSYS && errno != EPERM)) return value;
            s_noXattrAt = true;
        }
        return GetXattr(path, attribute, out errno);
    }

    /// <summary>The f_type of the file system holding an open file (statfs(2) magic), or 0 if unknown.</summary>
    public static long FileSystemType(int fd)
    {
        byte* buf = stackalloc byte[256]; // struct statfs: 120 bytes on 64-bit Linux, f_type first
        return Fstatfs(fd, buf) == 0 ? *(long*)buf : 0;
    }

    /// <summary>One xattr's value of an open file; null with errno (ENODATA: vanished).</summary>
    public static byte[]? GetXattr(int fd, ReadOnlySpan<byte> name, out int errno) => GetXattr(null, fd, name, out errno);

    /// <summary>pread into a span; bytes read, or -1 with errno.</summary>
    public static int Read(int fd, Span<byte> buffer, long offset, out int errno)
    {
        fixed (byte* b = buffer)
        {
            nint n = Pread(fd, b, buffer.Length, offset);
            errno = n < 0 ? Errno() : 0;
            return (int)n;
        }
    }

    /// <summary>pwrite of a whole span (short writes continued); 0 or the errno.</summary>
    public static int WriteAll(int fd, ReadOnlySpan<byte> data, long offset)
    {
        fixed (byte* b = data)
        {
            int done = 0;
            while (done < data.Length)
            {
                nint n = Pwrite(fd, b + done, data.Length - done, offset + done);
                if (n < 0)
                {
                    int e = Errno();
                    if (e == EINTR) continue;
                    return e;
                }
                if (n == 0) return EIO;
                done += (int)n;
            }
            return 0;
        }
    }

    // A NUL-terminated path (fd -1: l*xattr, not followed), an open fd (no path: f*xattr), or a name under a
    // directory fd (both: *xattrat with AT_SYMLINK_NOFOLLOW).
    private static nint List(byte* z, int fd, byte* buf, nint size)
    {
        if (z == null) return Flistxattr(fd, buf, size);
        return fd == -1 ? LlistxattrBytes(z, buf, size) : SyscallListxattrat(SYS_listxattrat, fd, z, AT_SYMLINK_NOFOLLOW, buf, size);
    }

    private static nint Get(byte* z, int fd, byte* name, byte* buf, nint size)
    {
        if (z == null) return Fgetxattr(fd, name, buf, size);
        if (fd == -1) return LgetxattrBytes(z, name, buf, size);
        var args = new XattrArgs { Value = (ulong)buf, Size = (uint)size };
        return SyscallGetxattrat(SYS_getxattrat, fd, z, AT_SYMLINK_NOFOLLOW, name, &args, sizeof(XattrArgs));
    }

    private static List<byte[]>? ListXattrs(byte* z, int fd, out int errno)
    {
        var names = new List<byte[]>();
        nint size = List(z, fd, null, 0);
        errno = 0;
        if (size < 0)
        {
            errno = Errno();
            if (errno == EOPNOTSUPP) { errno = 0; return names; }
            return null;
        }
        while (size > 0)
        {
            byte[] buf = new byte[size];
            nint n;
            fixed (byte* b = buf) n = List(z, fd, b, buf.Length);
            if (n < 0)
            {
                errno = Errno();
                if (errno == ERANGE) { size *= 2; continue; }
                return null;
            }
            var span = buf.AsSpan(0, (int)n);
            while (!span.IsEmpty)
            {
                int end = span.IndexOf((byte)0);
                if (end < 0) end = span.Length;
                if (end > 0) names.Add(span[..end].ToArray());
                span = end < span.Length ? span[(end + 1)..] : default;
            }
            break;
        }
        names.Sort((a, b) => a.AsSpan().SequenceCompareTo(b));
        return names;
    }

    /// <summary>One xattr's value (path and name as bytes, not followed); null with errno (ENODATA: vanished).</summary>
    public static byte[]? GetXattr(ReadOnlySpan<byte> path, ReadOnlySpan<byte> name, out int errno)
    {
        fixed (byte* p = Z(path, stackalloc byte[ZStack])) return GetXattr(p, -1, name, out errno);
    }

    private static byte[]? GetXattr(byte* zp, int fd, ReadOnlySpan<byte> name, out int errno)
    {
        ReadOnlySpan<byte> zn = Z(name, stackalloc byte[ZStack]);
        while (true)
        {
            nint size;
            fixed (byte* n = zn) size = Get(zp, fd, n, null, 0);
            if (size < 0)
            {
                errno = Errno();
                return null;
            }
            var value = new byte[size];
            nint got;
            fixed (byte* n = zn)
            fixed (byte* v = value)
            {
                got = Get(zp, fd, n, v, value.Length);
            }
            if (got >= 0)
            {
                errno = 0;
                return got == size ? value : value[..(int)got];
            }
            errno = Errno();
            if (errno != ERANGE) return null;
        }
    }

    /// <summary>
    /// The entry names of the open directory <paramref name="fd"/> (bytes, without "." and ".."), read with getdents64
    /// from its current position; null with errno on failure. The fd stays the caller's: reading it through
    /// fdopendir would cost a dup, an fstat, two fcntl and a close per directory (issue 14: five system calls per
    /// directory per walk, 175k per /usr copy, since the size estimate walks the tree too).
    /// </summary>
    public static List<byte[]>? ReadDirectory(int fd, out int errno)
    {
        const int bufferSize = 32 * 1024;
        byte* buffer = stackalloc byte[bufferSize];
        var names = new List<byte[]>();
        while (true)
        {
            nint n = Getdents64(fd, buffer, bufferSize);
            if (n == 0)
            {
                errno = 0;
                return names;
            }
            if (n < 0)
            {
                errno = Errno();
                if (errno == EINTR) continue;
                return null;
            }
            // struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name (NUL-terminated).
            for (nint at = 0; at < n;)
            {
                byte* ent = buffer + at;
                ushort length = *(ushort*)(ent + 16);
                if (length < DirentNameOffset + 1 || at + length > n)
                {
                    errno = EIO; // the kernel never does this; a bad record must not be read past
                    return null;
                }
                var name = MemoryMarshal.CreateReadOnlySpanFromNullTerminated(ent + DirentNameOffset);
                if (!name.SequenceEqual("."u8) && !name.SequenceEqual(".."u8)) names.Add(name.ToArray());
                at += length;
            }
        }
    }

    /// <summary>uid of a user name in this system's user database (getpwnam_r), or null.</summary>
    public static uint? LookupUser(ReadOnlySpan<byte> name) => Lookup(name, group: false);

    /// <summary>gid of a group name in this system's group database (getgrnam_r), or null.</summary>
    public static uint? LookupGroup(ReadOnlySpan<byte> name) => Lookup(name, group: true);

    private static uint? Lookup(ReadOnlySpan<byte> name, bool group)
    {
        // struct passwd and struct group on 64-bit glibc: two char* then the numeric id at offset 16.
        byte* record = stackalloc byte[64];
        for (int size = 4096; size <= 1 << 20; size *= 4)
        {
            byte[] buf = new byte[size];
            byte* result = null;
            int rc;
            fixed (byte* n = Z(name, stackalloc byte[ZStack]))
            fixed (byte* b = buf)
            {
                rc = group ? GetgrnamR(n, record, b, size, &result) : GetpwnamR(n, record, b, size, &result);
            }
            if (rc == ERANGE) continue;
            if (rc != 0 || result == null) return null;
            return *(uint*)(record + 16);
        }
        return null;
    }
}

/// <summary>Names as bytes, shown to an operator.</summary>
public static class ByteNames
{
    private static readonly UTF8Encoding s_strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// A printable form of a file name: valid UTF-8 as it is, every other byte as \xNN, control characters
    /// escaped, so that two different names never print the same and a terminal is never driven by a name.
    /// </summary>
    public static string Printable(ReadOnlySpan<byte> name, int max = 300)
    {
        var sb = new StringBuilder(Math.Min(name.Length, max) + 8);
        int i = 0;
        while (i < name.Length && sb.Length < max)
        {
            byte b = name[i];
            if (b < 0x80)
            {
                if (b < 0x20 || b == 0x7F || b == '\\') sb.Append(b switch { (byte)'\n' => "\\n", (byte)'\t' => "\\t", (byte)'\\' => "\\\\", _ => $"\\x{b:x2}" });
                else sb.Append((char)b);
                i++;
                continue;
            }
            System.Buffers.OperationStatus st = System.Text.Rune.DecodeFromUtf8(name[i..], out System.Text.Rune r, out int used);
            if (st == System.Buffers.OperationStatus.Done)
            {
                sb.Append(r.ToString());
                i += used;
            }
            else
            {
                sb.Append($"\\x{b:x2}");
                i++;
            }
        }
        if (i < name.Length) sb.Append("...");
        return sb.ToString();
    }

    /// <summary>True when the bytes are valid UTF-8.</summary>
    public static bool IsUtf8(ReadOnlySpan<byte> bytes) => System.Text.Unicode.Utf8.IsValid(bytes);

    /// <summary>Strict UTF-8 decoding, or null for bytes that are not UTF-8.</summary>
    public static string? TryDecode(ReadOnlySpan<byte> bytes)
    {
        try
        {
            return s_strict.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            return null;
        }
    }
}
