using System.Text;
using KaDeploy.Platform;

namespace KaDeploy.Payloads.Tar;

/// <summary>
/// One file found under a root: its path relative to the root ("etc/passwd") and its full path, both as the
/// bytes the kernel gave (Linux names need not be UTF-8), and its lstat. <see cref="DirFd"/> and <see cref="Name"/>
/// reach the same file relative to its parent directory (AT_FDCWD and the full path for the root); the fd is the
/// walker's and valid only until the walk moves on. <see cref="SizeIsExact"/> is false on the file systems whose
/// files the kernel generates as they are read (procfs, sysfs...): there a file that stats as 0 bytes may hold data.
/// </summary>
internal readonly record struct TreeEntry(byte[] Relative, byte[] Full, FileStatus Status, int DirFd, byte[] Name, bool SizeIsExact = true)
{
    /// <summary>The relative path as text (invalid UTF-8 shown as U+FFFD): for display and glob matching only.</summary>
    public string RelativePath => Encoding.UTF8.GetString(Relative);

    /// <summary>The full path as text (invalid UTF-8 shown as U+FFFD): for display only.</summary>
    public string FullPath => Encoding.UTF8.GetString(Full);
}

/// <summary>
/// Depth-first walk in bytewise name order, a directory before its contents, the root itself first as ".":
/// its mode, owner, xattrs and mtime belong to the copy as much as any file's (rsync -a compares them too).
/// Names are read with readdir as bytes and never decoded, so a name that is not valid UTF-8 is walked like any
/// other. Memory is one sorted name list per open directory level.
/// </summary>
internal static class TreeWalker
{
    private sealed class Frame(byte[] rel, byte[] full, List<byte[]> names, int fd, ulong device, Frame? parent)
    {
        public readonly byte[] Rel = rel;
        public readonly byte[] Full = full;
        public readonly List<byte[]> Names = names;
        public readonly int Fd = fd;
        public readonly ulong Device = device;
        // A directory on its parent's device is on its parent's file system: one statfs per file system crossed, not
        // one per directory.
        public readonly bool SizesExact = parent is not null && parent.Device == device
            ? parent.SizesExact
            : !GeneratedFileSystems.Contains(PosixAt.FileSystemType(fd));
        public int Index;
    }

    // statfs magics of file systems whose file sizes say nothing about their contents (procfs, sysfs, debugfs, tracefs,
    // securityfs, configfs, efivarfs, pstore, bpf, cgroup, cgroup2, FUSE): an empty-looking file there is read anyway.
    private static readonly HashSet<long> GeneratedFileSystems =
        [0x9fa0, 0x62656572, 0x64626720, 0x74726163, 0x73636673, 0x62656570, 0xde5e81e4, 0x6165676c, 0xcafe4a11, 0x27e0eb, 0x63677270, 0x65735546];

    public static FileStatus StatRoot(string root)
    {
        FileStatus st = Posix.LStat(root);
        return st.Kind == FileKind.Directory ? st : throw new KaDeployException($"{root} is not a directory");
    }

    // Every directory's fd stays open while its entries are walked (one per level), so each entry costs a statx (and
    // the caller's open or readlink) relative to it: no path walk from / per entry (issue 14's profile: a third of
    // the kernel time went to looking up the same leading components again).
    public static IEnumerable<TreeEntry> Walk(string root, PathExclusions exclusions, bool oneFileSystem, Action<string>? warn)
    {
        string fullRoot = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        FileStatus rootStat = StatRoot(fullRoot);
        byte[] rootBytes = Encoding.UTF8.GetBytes(fullRoot);
        yield return new TreeEntry("."u8.ToArray(), rootBytes, rootStat, LinuxNative.AT_FDCWD, rootBytes);
        var stack = new Stack<Frame>();
        try
        {
            stack.Push(List([], rootBytes, LinuxNative.AT_FDCWD, rootBytes, followFinal: false, rootStat.Device, null, null) ?? throw new KaDeployException($"cannot list {fullRoot}"));
            bool filter = !exclusions.IsEmpty;
            while (stack.Count > 0)
            {
                Frame f = stack.Peek();
                if (f.Index == f.Names.Count)
                {
                    LinuxNative.Close(stack.Pop().Fd);
                    continue;
                }
                byte[] name = f.Names[f.Index];
                f.Names[f.Index++] = []; // what has been walked is not kept
                byte[] rel = f.Rel.Length == 0 ? name : Concat(f.Rel, name);
                if (filter && exclusions.IsExcluded(Encoding.UTF8.GetString(rel))) continue;
                byte[] full = fullRoot == "/" ? Concat([], rel) : Concat(f.Full, name);
                if (!PosixAt.TryStat(f.Fd, name, out FileStatus st, out int errno))
                {
                    if (errno == LinuxNative.ENOENT)
                    {
                        warn?.Invoke($"{ByteNames.Printable(full)} vanished while walking the tree; skipped");
                        continue;
                    }
                    throw Posix.Error("statx", ByteNames.Printable(full), errno);
                }
                yield return new TreeEntry(rel, full, st, f.Fd, name, f.SizesExact);
                if (st.Kind == FileKind.Directory && (!oneFileSystem || st.Device == rootStat.Device))
                {
                    Frame? child = List(rel, full, f.Fd, name, followFinal: false, st.Device, f, warn);
                    if (child is { Names.Count: > 0 }) stack.Push(child);
                    else if (child != null) LinuxNative.Close(child.Fd);
                }
            }
        }
        finally
        {
            while (stack.Count > 0) LinuxNative.Close(stack.Pop().Fd);
        }
    }

    private static byte[] Concat(byte[] dir, byte[] name)
    {
        var r = new byte[dir.Length + 1 + name.Length];
        dir.CopyTo(r, 0);
        r[dir.Length] = (byte)'/';
        name.CopyTo(r, dir.Length + 1);
        return r;
    }

    // Opens a directory (kept for the walk of its entries) and reads its names, sorted bytewise; null if it vanished.
    private static Frame? List(byte[] rel, byte[] full, int dirfd, byte[] name, bool followFinal, ulong device, Frame? parent, Action<string>? warn)
    {
        int fd = dirfd == LinuxNative.AT_FDCWD
            ? PosixAt.OpenDirectoryPath(full, followFinal, out int errno)
            : PosixAt.OpenDirectory(dirfd, name, out errno);
        List<byte[]>? names = fd >= 0 ? PosixAt.ReadDirectory(fd, out errno) : null;
        if (names == null)
        {
            if (fd >= 0) LinuxNative.Close(fd);
            if (errno == LinuxNative.ENOENT && warn != null)
            {
                warn($"{ByteNames.Printable(full)} vanished while walking the tree; its contents skipped");
                return null;
            }
            throw new KaDeployException($"opendir {ByteNames.Printable(full)}: {LinuxNative.StrError(errno)}");
        }
        names.Sort((a, b) => a.AsSpan().SequenceCompareTo(b));
        return new Frame(rel, full, names, fd, device, parent);
    }
}
