using System.IO.Enumeration;
using KaDeploy.Platform;

namespace KaDeploy.Payloads.Tar;

/// <summary>One file found under a root: its path relative to the root ("etc/passwd") and its lstat.</summary>
internal readonly record struct TreeEntry(string RelativePath, string FullPath, FileStatus Status);

/// <summary>
/// Depth-first walk in ordinal name order, a directory before its contents, the root itself first as ".":
/// its mode, owner, xattrs and mtime belong to the copy as much as any file's (rsync -a compares them too).
/// Memory is one sorted name list per open directory level.
/// </summary>
internal static class TreeWalker
{
    private sealed class Frame(string rel, string full, List<string> names)
    {
        public readonly string Rel = rel;
        public readonly string Full = full;
        public readonly List<string> Names = names;
        public int Index;
    }

    private static readonly EnumerationOptions s_listOptions = new()
    {
        AttributesToSkip = 0,
        IgnoreInaccessible = false,
        RecurseSubdirectories = false,
        ReturnSpecialDirectories = false,
    };

    public static FileStatus StatRoot(string root)
    {
        FileStatus st = Posix.LStat(root);
        return st.Kind == FileKind.Directory ? st : throw new KaDeployException($"{root} is not a directory");
    }

    public static IEnumerable<TreeEntry> Walk(string root, PathExclusions exclusions, bool oneFileSystem, Action<string>? warn)
    {
        string fullRoot = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        FileStatus rootStat = StatRoot(fullRoot);
        yield return new TreeEntry(".", fullRoot, rootStat);
        var stack = new Stack<Frame>();
        stack.Push(new Frame("", fullRoot, List(fullRoot)));
        while (stack.Count > 0)
        {
            Frame f = stack.Peek();
            if (f.Index == f.Names.Count)
            {
                stack.Pop();
                continue;
            }
            string name = f.Names[f.Index++];
            string rel = f.Rel.Length == 0 ? name : string.Concat(f.Rel, "/", name);
            if (exclusions.IsExcluded(rel)) continue;
            string full = fullRoot == "/" ? "/" + rel : string.Concat(fullRoot, "/", rel);
            if (!Posix.TryLStat(full, out FileStatus st, out int errno))
            {
                if (errno == LinuxNative.ENOENT)
                {
                    warn?.Invoke($"{full} vanished while walking the tree; skipped");
                    continue;
                }
                throw Posix.Error("statx", full, errno);
            }
            yield return new TreeEntry(rel, full, st);
            if (st.Kind == FileKind.Directory && (!oneFileSystem || st.Device == rootStat.Device))
            {
                List<string>? names = TryList(full, warn);
                if (names is { Count: > 0 }) stack.Push(new Frame(rel, full, names));
            }
        }
    }

    private static List<string> List(string dir) =>
        TryList(dir, null) ?? throw new KaDeployException($"cannot list {dir}");

    private static List<string>? TryList(string dir, Action<string>? warn)
    {
        var names = new List<string>();
        try
        {
            var e = new FileSystemEnumerable<string>(dir, static (ref FileSystemEntry x) => x.FileName.ToString(), s_listOptions);
            foreach (string n in e) names.Add(n);
        }
        catch (DirectoryNotFoundException)
        {
            warn?.Invoke($"{dir} vanished while walking the tree; its contents skipped");
            return null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"opendir {dir}: {ex.Message}", ex);
        }
        names.Sort(StringComparer.Ordinal);
        return names;
    }
}
