using KaDeploy.Platform;

namespace KaDeploy.Payloads.Tar;

/// <summary>Settings for <see cref="TarTreeSink"/>.</summary>
public sealed record TarTreeSinkOptions
{
    /// <summary>Directory the tree is extracted into; created if missing.</summary>
    public required string Target { get; init; }

    /// <summary>Allow a non-empty target; existing files at archive paths are replaced.</summary>
    public bool Force { get; init; }

    /// <summary>Apply the archive's numeric uid/gid (lchown). Defaults to true when running as root.</summary>
    public bool PreserveOwnership { get; init; } = Posix.IsRoot;

    /// <summary>
    /// Receives notes that change nothing on disk (a pax keyword GNU tar ignores too). Anything that would make the
    /// tree differ from the archive (an xattr the target refuses, a device node without root) fails instead.
    /// </summary>
    public Action<string>? Warn { get; init; }

    /// <summary>Size of the archive reader's buffer: the largest write of file data from an input that does not lend its bytes.</summary>
    public int BufferSize { get; init; } = 1 << 20;
}

/// <summary>What an extraction wrote.</summary>
public sealed record TarExtractionSummary(long Entries, long Bytes);

/// <summary>
/// Extracts a tar stream (v7, ustar, GNU, pax, star; see <see cref="TarArchiveReader"/>) into a directory exactly:
/// names and link targets as bytes, owners, modes, nanosecond mtimes, xattrs as bytes, POSIX ACLs, hard links,
/// devices, sparse files written back sparse. An entry that cannot be created as described fails the extraction
/// with its name and the reason; nothing is skipped. Every path is walked one component at a time with
/// openat(O_NOFOLLOW) from the target's fd and every entry created with the *at calls relative to its parent's fd,
/// so nothing lands outside the target: absolute names, "..", NUL bytes, a parent that is a symlink (the archive's
/// own or a pre-existing one) and hard links that escape are refused. Symlink targets are stored verbatim and never
/// followed. Durable (syncfs) before it returns.
/// </summary>
public sealed class TarTreeSink : IPayloadSink
{
    /// <summary>Largest entry or file size accepted (2^53, beyond any real file system).</summary>
    public const long MaxEntrySize = 1L << 53;
    /// <summary>Largest GNU sparse map text accepted.</summary>
    public const int MaxSparseMapBytes = 4 << 20;
    /// <summary>Most segments accepted in one sparse map.</summary>
    public const int MaxSparseSegments = 1 << 20;
    /// <summary>Deepest path accepted (directories below the target).</summary>
    public const int MaxDepth = 1024;
    /// <summary>Largest pax extended header or GNU long name accepted (the reader holds one whole in memory).</summary>
    public const int MaxMetadataBytes = 8 << 20;

    private readonly TarTreeSinkOptions _options;
    private readonly string _root;

    public TarTreeSink(TarTreeSinkOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(options.Target);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.BufferSize, 4096);
        _options = options;
        _root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(options.Target));
    }

    /// <inheritdoc/>
    public string Description => $"extract into {_root}";

    /// <summary>What the last <see cref="ConsumeAsync"/> wrote (also set, partially, when it failed).</summary>
    public TarExtractionSummary Summary { get; private set; } = new(0, 0);

    /// <summary>
    /// Checks the target before any transfer starts: it must be a directory (created if missing) and empty,
    /// except for an ext4 "lost+found", unless <see cref="TarTreeSinkOptions.Force"/>.
    /// </summary>
    public void EnsureTargetUsable()
    {
        if (!Posix.TryLStat(_root, out FileStatus st, out int errno))
        {
            if (errno != LinuxNative.ENOENT) throw Posix.Error("statx", _root, errno);
            try
            {
                Directory.CreateDirectory(_root);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new KaDeployException($"cannot create target {_root}: {ex.Message}", ex);
            }
            return;
        }
        if (st.Kind != FileKind.Directory && !Directory.Exists(_root))
        {
            throw new KaDeployException($"target {_root} is not a directory");
        }
        if (_options.Force) return;
        foreach (string e in Directory.EnumerateFileSystemEntries(_root))
        {
            if (Path.GetFileName(e) == "lost+found" && !Directory.EnumerateFileSystemEntries(e).Any()) continue;
            throw new KaDeployException($"target {_root} is not empty (use --force)");
        }
    }

    /// <inheritdoc/>
    public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (!Directory.Exists(_root)) EnsureTargetUsable();
        using var run = new Extraction(this);
        try
        {
            using var reader = new TarArchiveReader(input, MaxMetadataBytes, _options.Warn, _options.BufferSize);
            while (await reader.NextAsync(cancellationToken).ConfigureAwait(false) is TarHeader entry)
            {
                await run.ExtractAsync(entry, reader, cancellationToken).ConfigureAwait(false);
            }
            run.FinishDirectories();
            Posix.SyncFileSystem(_root);
        }
        finally
        {
            Summary = new TarExtractionSummary(run.Entries, run.Bytes);
        }
    }

    /// <summary>
    /// "./a//b/" becomes [a, b]; an empty result names the target itself. Absolute names, ".." components, NUL
    /// bytes and paths deeper than <see cref="MaxDepth"/> are refused (GNU tar strips a leading '/'; a cloning
    /// tool must not guess where such an entry belongs).
    /// </summary>
    internal static List<byte[]> SafeComponents(ReadOnlySpan<byte> name)
    {
        if (name.Contains((byte)0)) throw Refuse(name, "NUL byte in name");
        if (!name.IsEmpty && name[0] == '/') throw Refuse(name, "absolute path");
        var parts = new List<byte[]>();
        foreach (Range r in name.Split((byte)'/'))
        {
            ReadOnlySpan<byte> part = name[r];
            if (part.IsEmpty || part.SequenceEqual("."u8)) continue;
            if (part.SequenceEqual(".."u8)) throw Refuse(name, "'..' component");
            parts.Add(part.ToArray());
        }
        if (parts.Count > MaxDepth) throw Refuse(name, $"deeper than {MaxDepth} directories");
        return parts;
    }

    private static KaDeployException Refuse(ReadOnlySpan<byte> name, string why) =>
        new($"refusing tar entry '{ByteNames.Printable(name)}': {why}");

    private static string Describe(FileKind k) => k switch
    {
        FileKind.Symlink => "symlink",
        FileKind.Regular => "file",
        _ => k.ToString().ToLowerInvariant(),
    };

    /// <summary>State of one extraction: the target's fd and the open directories of the current path.</summary>
    private sealed class Extraction : IDisposable
    {
        private readonly TarTreeSinkOptions _options;
        private readonly string _root;
        private readonly int _rootFd;
        private readonly DirInfo _rootInfo;
        // Open directory fds for a prefix of the last entry's path: _stack[i] is component i. Archives list a
        // directory's entries together, so most entries reuse their parent's fd and cost no path walk at all.
        private readonly List<(byte[] Name, int Fd, DirInfo Info)> _stack = [];
        // Directories are finished as GNU tar and bsdtar do: once the archive leaves them (the next entry is not inside),
        // deepest first: mode, then xattrs and ACLs (an ACL's mask lands in the group bits, so it goes after chmod; a
        // default ACL set early would be inherited by entries the archive lists without one), then mtime, once nothing
        // more is created inside. The pending ones are the ancestors of the current entry, so this list is bounded by
        // the depth of the tree, not by its number of directories (issue 14: memory independent of the entry count).
        // An archive that comes back into a finished directory (bsdtar lists a directory's subdirectories after all its
        // files) or writes into one it never listed gets that directory's mtime as it is just before (TimesOnly), put
        // back when the archive leaves it again: any order of entries ends with the archive's times.
        private readonly List<(List<byte[]> Path, TarHeader Header, bool TimesOnly)> _deferred = [];
        // What a freshly created inode gets without any call (owner from our fsuid/fsgid or a set-gid parent, permission
        // bits from the umask): fchown and fchmod are skipped when that is already what the archive says.
        private readonly uint _euid, _egid, _umask;
        private byte[] _name = [];

        public long Entries;
        public long Bytes;

        /// <summary>Group a new inode in this directory gets: the directory's own with set-gid, ours otherwise.</summary>
        private readonly record struct DirInfo(bool SetGid, uint Gid);

        public Extraction(TarTreeSink sink)
        {
            _options = sink._options;
            _root = sink._root;
            // The target may be given through a symlink (the operator's choice); everything below it is walked without.
            _rootFd = PosixAt.OpenDirectoryPath(System.Text.Encoding.UTF8.GetBytes(_root), followFinal: true, out int errno);
            if (_rootFd < 0) throw Posix.Error("open", _root, errno);
            _euid = LinuxNative.Geteuid();
            _egid = LinuxNative.Getegid();
            _umask = ReadUmask();
            _rootInfo = Info(_rootFd);
        }

        // The umask without changing it (umask(2) can only be read by setting it, racing other threads).
        private static uint ReadUmask()
        {
            try
            {
                foreach (string line in File.ReadLines("/proc/self/status"))
                {
                    if (line.StartsWith("Umask:", StringComparison.Ordinal)) return Convert.ToUInt32(line[6..].Trim(), 8);
                }
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException)
            {
            }
            return 0x1FF; // unknown: every mode is set explicitly
        }

        private DirInfo Info(int fd)
        {
            if (!_options.PreserveOwnership || !PosixAt.TryStat(fd, [], out FileStatus st, out _)) return default;
            return new DirInfo((st.Mode & LinuxNative.S_ISGID) != 0, st.Gid);
        }

        public void Dispose()
        {
            Truncate(0);
            LinuxNative.Close(_rootFd);
        }

        private void Truncate(int depth)
        {
            for (int i = _stack.Count - 1; i >= depth; i--) LinuxNative.Close(_stack[i].Fd);
            if (_stack.Count > depth) _stack.RemoveRange(depth, _stack.Count - depth);
        }

        private KaDeployException Refuse(string why) => TarTreeSink.Refuse(_name, why);

        private KaDeployException Failed(string call, int errno) =>
            new($"tar entry '{ByteNames.Printable(_name)}': {call}: {LinuxNative.StrError(errno)}");

        private static string Join(List<byte[]> path, int count)
        {
            var b = new List<byte>();
            for (int i = 0; i < count; i++)
            {
                if (i > 0) b.Add((byte)'/');
                b.AddRange(path[i]);
            }
            return ByteNames.Printable(b.ToArray());
        }

        /// <summary>
        /// The fd of the directory holding the first <paramref name="count"/> components of <paramref name="path"/>,
        /// opened one component at a time with O_NOFOLLOW (created 0755 when missing and <paramref name="create"/>,
        /// as tar does for directories the archive does not list). A component that is a symlink or not a directory
        /// is refused: nothing is ever reached through a link.
        /// </summary>
        private int Directory(List<byte[]> path, int count, bool create) => Directory(path, count, create, out _);

        private int Directory(List<byte[]> path, int count, bool create, out DirInfo info)
        {
            int depth = 0;
            while (depth < _stack.Count && depth < count && _stack[depth].Name.AsSpan().SequenceEqual(path[depth])) depth++;
            Truncate(depth);
            int fd = depth == 0 ? _rootFd : _stack[depth - 1].Fd;
            info = depth == 0 ? _rootInfo : _stack[depth - 1].Info;
            for (int i = depth; i < count; i++)
            {
                int child = PosixAt.OpenDirectory(fd, path[i], out int errno);
                if (child < 0 && errno == LinuxNative.ENOENT && create)
                {
                    int rc = PosixAt.MakeDirectory(fd, path[i], 0x1ED);
                    if (rc != 0 && rc != LinuxNative.EEXIST) throw Failed($"mkdir {Join(path, i + 1)}", rc);
                    child = PosixAt.OpenDirectory(fd, path[i], out errno);
                }
                if (child < 0)
                {
                    if (errno is LinuxNative.ELOOP or LinuxNative.ENOTDIR)
                    {
                        string what = PosixAt.TryStat(fd, path[i], out FileStatus st, out _) ? Describe(st.Kind) : "not a directory";
                        throw Refuse($"parent '{Join(path, i + 1)}' is a {what}, not a directory");
                    }
                    throw Failed($"open {Join(path, i + 1)}", errno);
                }
                info = Info(child);
                _stack.Add((path[i], child, info));
                fd = child;
            }
            return fd;
        }

        // Clears the way for a new entry; true if an existing directory is kept (directory over directory).
        private bool Prepare(int dirfd, byte[] leaf, bool isDirectory)
        {
            if (!PosixAt.TryStat(dirfd, leaf, out FileStatus st, out int errno))
            {
                return errno == LinuxNative.ENOENT ? false : throw Failed("statx", errno);
            }
            if (st.Kind == FileKind.Directory)
            {
                if (isDirectory) return true;
                int rc = PosixAt.Remove(dirfd, leaf, directory: true);
                if (rc != 0) throw Refuse($"cannot replace a directory ({LinuxNative.StrError(rc)})");
                return false;
            }
            int r = PosixAt.Remove(dirfd, leaf, directory: false);
            if (r != 0 && r != LinuxNative.ENOENT) throw Failed("unlink", r);
            return false;
        }

        // Creates a new inode with `make` (0 or errno). A fresh target has nothing at the name, so the creation is
        // tried first and the name cleared (Prepare) only when it says EEXIST: one lookup per entry, not two.
        private int Create(int parent, byte[] leaf, Func<int> make)
        {
            int rc = make();
            if (rc != LinuxNative.EEXIST) return rc;
            Prepare(parent, leaf, isDirectory: false);
            return make();
        }

        // True when a new inode made in a directory with `info` already has the archive's owner.
        private bool NeedsChown(DirInfo info, TarHeader e) =>
            _options.PreserveOwnership && (e.Uid != _euid || e.Gid != (info.SetGid ? info.Gid : _egid));

        // True when a new inode made with `mode & 0777` under our umask lacks some of the archive's bits.
        private bool NeedsChmod(uint mode) => (mode & 0xE00) != 0 || (mode & _umask) != 0;

        // Before an entry: every pending directory that does not contain it is complete (archives list a directory's
        // contents right after it, as tar writes them) and is finished now.
        private void FinishLeftDirectories(List<byte[]> path)
        {
            while (_deferred.Count > 0 && !IsPrefix(_deferred[^1].Path, path))
            {
                (List<byte[]> dir, TarHeader h, bool timesOnly) = _deferred[^1];
                _deferred.RemoveAt(_deferred.Count - 1);
                Finish(dir, h, timesOnly);
            }
        }

        private static bool IsPrefix(List<byte[]> prefix, List<byte[]> path)
        {
            if (prefix.Count > path.Count) return false;
            for (int i = 0; i < prefix.Count; i++) if (!prefix[i].AsSpan().SequenceEqual(path[i])) return false;
            return true;
        }

        public async ValueTask ExtractAsync(TarHeader e, TarArchiveReader reader, CancellationToken ct)
        {
            _name = e.Name;
            if (e.Unsupported != null) throw Refuse(e.Unsupported);
            List<byte[]> path = SafeComponents(e.Name);
            if (path.Count == 0 && e.Kind != TarEntryKind.Directory) throw Refuse("only a directory may name the target itself");
            FinishLeftDirectories(path);
            _name = e.Name;
            byte[] leaf = path.Count == 0 ? [] : path[^1];
            uint mode = e.Mode & 0xFFF;

            switch (e.Kind)
            {
                case TarEntryKind.Directory:
                {
                    int fd;
                    bool chown = _options.PreserveOwnership;
                    if (path.Count == 0)
                    {
                        fd = _rootFd;
                    }
                    else
                    {
                        int parent = Directory(path, path.Count - 1, create: true, out DirInfo pinfo);
                        KeepParentTimes(path, parent);
                        int rc = PosixAt.MakeDirectory(parent, leaf, 0x1C0); // 0700 until its contents are in
                        if (rc == LinuxNative.EEXIST)
                        {
                            if (!Prepare(parent, leaf, isDirectory: true)) rc = PosixAt.MakeDirectory(parent, leaf, 0x1C0);
                            else rc = 0;
                        }
                        else if (rc == 0)
                        {
                            chown = NeedsChown(pinfo, e);
                        }
                        if (rc != 0) throw Failed("mkdir", rc);
                        fd = Directory(path, path.Count, create: false);
                    }
                    if (chown) Check("fchown", PosixAt.Chown(fd, [], e.Uid, e.Gid));
                    if (_deferred.Count > 0 && IsPrefix(_deferred[^1].Path, path) && _deferred[^1].Path.Count == path.Count)
                    {
                        _deferred[^1] = (path, e, false); // listed twice: the later entry wins, as it would have alone
                    }
                    else
                    {
                        _deferred.Add((path, e, false));
                    }
                    break;
                }

                case TarEntryKind.Regular:
                {
                    int parent = Directory(path, path.Count - 1, create: true, out DirInfo pinfo);
                    KeepParentTimes(path, parent);
                    int file = -1;
                    int errno = Create(parent, leaf, () =>
                    {
                        file = PosixAt.CreateFileFd(parent, leaf, mode & 0x1FF, out int err);
                        return file < 0 ? err : 0;
                    });
                    if (errno != 0) throw Failed("open", errno);
                    try
                    {
                        if (e.Sparse == null)
                        {
                            Bytes += await CopyAsync(reader, file, 0, e.DataLength, ct).ConfigureAwait(false);
                        }
                        else
                        {
                            foreach ((long off, long len) in e.Sparse)
                            {
                                Bytes += await CopyAsync(reader, file, off, len, ct).ConfigureAwait(false);
                            }
                            if (LinuxNative.Ftruncate(file, e.RealSize) != 0) throw Failed("ftruncate", LinuxNative.Errno());
                        }
                        // Owner before mode (chown clears set-id bits), xattrs after both (chown clears security.capability).
                        if (NeedsChown(pinfo, e) && LinuxNative.Fchown(file, e.Uid, e.Gid) != 0) throw Failed("fchown", LinuxNative.Errno());
                        if (NeedsChmod(mode) && LinuxNative.Fchmod(file, mode) != 0) throw Failed("fchmod", LinuxNative.Errno());
                        ApplyXattrs(e, file, null);
                        Check("futimens", PosixAt.SetTimes(file, e.MtimeSec, e.MtimeNsec));
                    }
                    finally
                    {
                        LinuxNative.Close(file);
                    }
                    break;
                }

                case TarEntryKind.Symlink:
                {
                    if (e.LinkName.Length == 0) throw Refuse("empty symlink target");
                    if (e.LinkName.AsSpan().Contains((byte)0)) throw Refuse("NUL in symlink target");
                    int parent = Directory(path, path.Count - 1, create: true, out DirInfo pinfo);
                    KeepParentTimes(path, parent);
                    Check("symlink", Create(parent, leaf, () => PosixAt.MakeSymlink(e.LinkName, parent, leaf)));
                    if (NeedsChown(pinfo, e)) Check("lchown", PosixAt.Chown(parent, leaf, e.Uid, e.Gid));
                    ApplyXattrs(e, parent, leaf);
                    Check("utimensat", PosixAt.SetTimes(parent, leaf, e.MtimeSec, e.MtimeNsec));
                    break;
                }

                case TarEntryKind.HardLink:
                {
                    List<byte[]> target;
                    try
                    {
                        target = SafeComponents(e.LinkName);
                    }
                    catch (KaDeployException ex)
                    {
                        throw Refuse($"hard link target '{ByteNames.Printable(e.LinkName)}' rejected ({ex.Message})");
                    }
                    if (target.Count == 0) throw Refuse("hard link to the target directory");
                    if (SamePath(path, target)) break;
                    int tparent = OpenExisting(target, e.LinkName);
                    try
                    {
                        if (!PosixAt.TryStat(tparent, target[^1], out FileStatus tst, out int errno))
                        {
                            throw Refuse($"hard link target '{ByteNames.Printable(e.LinkName)}' does not exist ({LinuxNative.StrError(errno)})");
                        }
                        if (tst.Kind == FileKind.Directory) throw Refuse($"hard link target '{ByteNames.Printable(e.LinkName)}' is a directory");
                        int parent = Directory(path, path.Count - 1, create: true);
                        KeepParentTimes(path, parent);
                        Check("link", Create(parent, leaf, () => PosixAt.MakeHardLink(tparent, target[^1], parent, leaf)));
                    }
                    finally
                    {
                        LinuxNative.Close(tparent);
                    }
                    break;
                }

                case TarEntryKind.CharDevice or TarEntryKind.BlockDevice or TarEntryKind.Fifo:
                {
                    int parent = Directory(path, path.Count - 1, create: true, out DirInfo pinfo);
                    KeepParentTimes(path, parent);
                    FileKind kind = e.Kind switch
                    {
                        TarEntryKind.CharDevice => FileKind.CharDevice,
                        TarEntryKind.BlockDevice => FileKind.BlockDevice,
                        _ => FileKind.Fifo,
                    };
                    int rc = Create(parent, leaf, () => PosixAt.MakeNode(parent, leaf, kind, mode & 0x1FF, e.DevMajor, e.DevMinor));
                    if (rc != 0) throw Failed(kind == FileKind.Fifo ? "mkfifo" : Posix.IsRoot ? "mknod" : "mknod (device nodes need root)", rc);
                    if (NeedsChown(pinfo, e)) Check("lchown", PosixAt.Chown(parent, leaf, e.Uid, e.Gid));
                    if (NeedsChmod(mode)) Check("chmod", PosixAt.Chmod(parent, leaf, mode));
                    ApplyXattrs(e, parent, leaf);
                    Check("utimensat", PosixAt.SetTimes(parent, leaf, e.MtimeSec, e.MtimeNsec));
                    break;
                }
            }
            Entries++;
        }

        private static bool SamePath(List<byte[]> a, List<byte[]> b)
        {
            if (a.Count != b.Count) return false;
            for (int i = 0; i < a.Count; i++) if (!a[i].AsSpan().SequenceEqual(b[i])) return false;
            return true;
        }

        // The parent of a hard link's target, walked like any path (O_NOFOLLOW) but never created; the caller closes it.
        private int OpenExisting(List<byte[]> target, byte[] linkName)
        {
            int fd = LinuxNative.Fcntl(_rootFd);
            for (int i = 0; i < target.Count - 1; i++)
            {
                int child = PosixAt.OpenDirectory(fd, target[i], out int errno);
                LinuxNative.Close(fd);
                if (child < 0)
                {
                    throw Refuse($"hard link target '{ByteNames.Printable(linkName)}' rejected: hard link target parent '{Join(target, i + 1)}' is not a directory ({LinuxNative.StrError(errno)})");
                }
                fd = child;
            }
            return fd;
        }

        private void Check(string call, int errno)
        {
            if (errno != 0) throw Failed(call, errno);
        }

        // xattrs, then ACLs (on an open fd, or on dirfd/leaf without following it).
        private void ApplyXattrs(TarHeader e, int fd, byte[]? leaf)
        {
            foreach ((byte[] n, byte[] v) in e.Xattrs)
            {
                if (n.Length == 0 || n.AsSpan().Contains((byte)0)) throw Refuse($"xattr name '{ByteNames.Printable(n)}' is empty or holds a NUL");
                Set(n, v, $"setxattr {ByteNames.Printable(n)}");
            }
            if (e.AclAccess != null) Set("system.posix_acl_access"u8.ToArray(), Acl(e.AclAccess, "access"), "set access ACL");
            if (e.AclDefault != null)
            {
                if (e.Kind != TarEntryKind.Directory) throw Refuse("a default ACL on something that is not a directory");
                Set("system.posix_acl_default"u8.ToArray(), Acl(e.AclDefault, "default"), "set default ACL");
            }

            void Set(byte[] name, byte[] value, string what)
            {
                int rc = leaf == null ? PosixAt.SetXattr(fd, name, value) : PosixAt.SetXattrAt(fd, leaf, name, value);
                if (rc != 0) throw Failed(what, rc);
            }
        }

        private byte[] Acl(byte[] text, string which)
        {
            try
            {
                return PosixAcl.ToXattr(text);
            }
            catch (FormatException ex)
            {
                throw Refuse($"{which} ACL: {ex.Message}");
            }
        }

        /// <summary>Modes and mtimes of the directories still pending at the end, deepest first.</summary>
        public void FinishDirectories()
        {
            for (int i = _deferred.Count - 1; i >= 0; i--) Finish(_deferred[i].Path, _deferred[i].Header, _deferred[i].TimesOnly);
            _deferred.Clear();
        }

        private void Finish(List<byte[]> path, TarHeader e, bool timesOnly)
        {
            _name = e.Name;
            int fd = path.Count == 0 ? _rootFd : Directory(path, path.Count, create: false);
            if (!timesOnly)
            {
                if (LinuxNative.Fchmod(fd, e.Mode & 0xFFF) != 0) throw Failed("fchmod", LinuxNative.Errno());
                ApplyXattrs(e, fd, null);
            }
            Check("futimens", PosixAt.SetTimes(fd, e.MtimeSec, e.MtimeNsec));
        }

        // Called with the fd of a new entry's parent before anything is made in it: unless the parent is the pending
        // directory on top (the usual case: a depth-first archive listed it), its mtime as it is now is kept to be put
        // back, because it is either finished already or not the archive's to set.
        private void KeepParentTimes(List<byte[]> path, int parent)
        {
            if (_deferred.Count > 0 && _deferred[^1].Path.Count == path.Count - 1) return;
            if (!PosixAt.TryStat(parent, [], out FileStatus st, out int errno)) throw Failed("statx", errno);
            var now = new TarHeader { Name = _name, MtimeSec = st.MtimeSec, MtimeNsec = st.MtimeNsec };
            _deferred.Add((path.GetRange(0, path.Count - 1), now, true));
        }

        // Copies `length` bytes of entry data to the file at `offset`; the archive ending early is an error. Each piece
        // is written from where the reader has it: a node's ring slot when the input lends its bytes (no copy of our
        // own; one pwrite per frame, and the copy cost more than the calls: issue 14, /usr row, client user time -0.7
        // CPU-s of 6.8 GB), else the reader's buffer.
        private async ValueTask<long> CopyAsync(TarArchiveReader reader, int fd, long offset, long length, CancellationToken ct)
        {
            long done = 0;
            while (done < length)
            {
                var piece = await reader.ReadDataSegmentAsync((int)Math.Min(int.MaxValue, length - done), ct).ConfigureAwait(false);
                if (piece.IsEmpty) throw Refuse($"archive ends inside the entry ({done} of {length} bytes)");
                int rc = PosixAt.WriteAll(fd, piece.Span, offset + done);
                if (rc != 0) throw new KaDeployException($"tar entry '{ByteNames.Printable(_name)}': write: {LinuxNative.StrError(rc)}");
                done += piece.Length;
            }
            return done;
        }
    }
}
