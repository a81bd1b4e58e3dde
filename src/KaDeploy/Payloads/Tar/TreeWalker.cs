using System.Text;
using KaDeploy.Platform;

namespace KaDeploy.Payloads.Tar;

/// <summary>
/// One file found under a root: its path relative to the root ("etc/passwd") and its full path, both as the
/// bytes the kernel gave (Linux names need not be UTF-8), and its lstat.
/// </summary>
internal readonly record struct TreeEntry(byte[] Relative, byte[] Full, FileStatus Status)
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
    private sealed class Frame(byte[] rel, byte[] full, List<byte[]> names)
    {
        public readonly byte[] Rel = rel;
        public readonly byte[] Full = full;
        public readonly List<byte[]> Names = names;
        public int Index;
    }

    public static FileStatus StatRoot(string root)
    {
        FileStatus st = Posix.LStat(root);
        return st.Kind == FileKind.Directory ? st : throw new KaDeployException($"{root} is not a directory");
    }

    public static IEnumerable<TreeEntry> Walk(string root, PathExclusions exclusions, bool oneFileSystem, Action<string>? warn)
    {
        string fullRoot = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        FileStatus rootStat = StatRoot(fullRoot);
        byte[] rootBytes = Encoding.UTF8.GetBytes(fullRoot);
        yield return new TreeEntry("."u8.ToArray(), rootBytes, rootStat);
        var stack = new Stack<Frame>();
        stack.Push(new Frame([], rootBytes, List(rootBytes, null) ?? throw new KaDeployException($"cannot list {fullRoot}")));
        while (stack.Count > 0)
        {
            Frame f = stack.Peek();
            if (f.Index == f.Names.Count)
            {
                stack.Pop();
                continue;
            }
            byte[] name = f.Names[f.Index++];
            byte[] rel = f.Rel.Length == 0 ? name : Concat(f.Rel, name);
            if (exclusions.IsExcluded(Encoding.UTF8.GetString(rel))) continue;
            byte[] full = fullRoot == "/" ? Concat([], rel) : Concat(f.Full, name);
            if (!PosixAt.TryStat(LinuxNative.AT_FDCWD, full, out FileStatus st, out int errno))
            {
                if (errno == LinuxNative.ENOENT)
                {
                    warn?.Invoke($"{ByteNames.Printable(full)} vanished while walking the tree; skipped");
                    continue;
                }
                throw Posix.Error("statx", ByteNames.Printable(full), errno);
            }
            yield return new TreeEntry(rel, full, st);
            if (st.Kind == FileKind.Directory && (!oneFileSystem || st.Device == rootStat.Device))
            {
                List<byte[]>? names = List(full, warn);
                if (names is { Count: > 0 }) stack.Push(new Frame(rel, full, names));
            }
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

    private static List<byte[]>? List(byte[] dir, Action<string>? warn)
    {
        int fd = PosixAt.OpenDirectoryPath(dir, followFinal: false, out int errno);
        List<byte[]>? names = fd < 0 ? null : PosixAt.ReadDirectory(fd, out errno);
        if (names == null)
        {
            if (errno == LinuxNative.ENOENT && warn != null)
            {
                warn($"{ByteNames.Printable(dir)} vanished while walking the tree; its contents skipped");
                return null;
            }
            throw new KaDeployException($"opendir {ByteNames.Printable(dir)}: {LinuxNative.StrError(errno)}");
        }
        names.Sort((a, b) => a.AsSpan().SequenceCompareTo(b));
        return names;
    }
}
