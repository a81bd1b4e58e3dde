using System.Buffers;
using System.Formats.Tar;
using System.Globalization;
using System.Text;
using KaDeploy.Platform;
using Microsoft.Win32.SafeHandles;

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

    /// <summary>Receives non-fatal problems (an xattr the target refuses, a device node without root). Null: ignored.</summary>
    public Action<string>? Warn { get; init; }

    /// <summary>Size of the pooled copy buffer.</summary>
    public int BufferSize { get; init; } = 1 << 20;
}

/// <summary>What an extraction wrote.</summary>
public sealed record TarExtractionSummary(long Entries, long Bytes);

/// <summary>
/// Extracts a pax/ustar/GNU tar stream into a directory with full fidelity (owners, modes, nanosecond mtimes,
/// xattrs, hard links, devices, GNU sparse 1.0 files written back sparse), refusing any entry that would land
/// outside the target: absolute names, "..", NUL bytes, paths through a symlink (the archive's own or a
/// pre-existing one), hard links that escape, and sizes or sparse maps too large to be honest.
/// Symlink targets are stored verbatim and never followed. Durable (syncfs) before it returns.
/// </summary>
public sealed class TarTreeSink : IPayloadSink
{
    /// <summary>Largest entry or file size accepted (2^53, beyond any real file system).</summary>
    public const long MaxEntrySize = 1L << 53;
    /// <summary>Largest GNU sparse map text accepted.</summary>
    public const int MaxSparseMapBytes = 4 << 20;
    /// <summary>Most segments accepted in one sparse map.</summary>
    public const int MaxSparseSegments = 1 << 20;
    /// <summary>Largest pax extended header or GNU long name accepted (TarReader holds one whole in memory).</summary>
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
        var run = new Extraction(this);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(_options.BufferSize);
        try
        {
            await using var guard = new TarStreamGuard(input, MaxMetadataBytes);
            await using var reader = new TarReader(guard, leaveOpen: true);
            while (true)
            {
                TarEntry? entry;
                try
                {
                    entry = await reader.GetNextEntryAsync(copyData: false, cancellationToken).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is InvalidDataException or FormatException or OverflowException
                                              or ArgumentException or EndOfStreamException or InvalidOperationException)
                {
                    throw new KaDeployException($"malformed tar stream after {run.Entries} entries: {ex.Message}", ex);
                }
                if (entry == null) break;
                await run.ExtractAsync(entry, buffer, cancellationToken).ConfigureAwait(false);
            }
            run.FinishDirectories();
            Posix.SyncFileSystem(_root);
        }
        finally
        {
            Summary = new TarExtractionSummary(run.Entries, run.Bytes);
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>State of one extraction.</summary>
    private sealed class Extraction(TarTreeSink sink)
    {
        private readonly TarTreeSinkOptions _options = sink._options;
        private readonly string _root = sink._root;
        // Relative paths known to be real directories (created or checked by us); "" is the target.
        private readonly HashSet<string> _dirs = new(StringComparer.Ordinal) { "" };
        private readonly List<(string Full, int Depth, uint Mode, long Sec, uint Nsec)> _deferred = [];
        private readonly List<(string Name, byte[] Value)> _xattrs = [];

        public long Entries;
        public long Bytes;

        private string Full(string rel) => rel.Length == 0 ? _root : string.Concat(_root, "/", rel);

        public async Task ExtractAsync(TarEntry entry, byte[] buffer, CancellationToken ct)
        {
            IReadOnlyDictionary<string, string>? pax = (entry as PaxTarEntry)?.ExtendedAttributes;
            string name = entry.Name;
            bool sparse = false;
            if (pax != null)
            {
                if (pax.ContainsKey("GNU.sparse.map") || pax.ContainsKey("GNU.sparse.size") || pax.ContainsKey("GNU.sparse.offset"))
                {
                    throw Refuse(name, "GNU sparse format 0.x is not supported");
                }
                if (pax.TryGetValue("GNU.sparse.major", out string? major))
                {
                    if (major != "1" || !pax.TryGetValue("GNU.sparse.minor", out string? minor) || minor != "0")
                    {
                        throw Refuse(name, $"GNU sparse format {major} is not supported");
                    }
                    sparse = true;
                    name = pax.TryGetValue("GNU.sparse.name", out string? real) ? real : throw Refuse(name, "sparse entry without GNU.sparse.name");
                }
            }

            TarEntryType type = entry.EntryType;
            if (type is TarEntryType.GlobalExtendedAttributes) return;

            string rel = SafeRelative(name);
            if (entry.Length < 0 || entry.Length > MaxEntrySize) throw Refuse(name, $"size {entry.Length} is absurd");
            uint mode = (uint)entry.Mode & 0xFFF;
            (long sec, uint nsec) = Mtime(entry, pax);
            uint uid = (uint)entry.Uid, gid = (uint)entry.Gid;
            CollectXattrs(pax);

            if (rel.Length == 0 && type != TarEntryType.Directory) throw Refuse(name, "only a directory may name the target itself");

            switch (type)
            {
                case TarEntryType.Directory:
                {
                    string full = Full(rel);
                    if (rel.Length > 0)
                    {
                        EnsureParents(rel, name);
                        if (!Prepare(full, rel, name, isDirectory: true)) Posix.MakeDirectory(full, 0x1C0); // 0700 until finished
                        _dirs.Add(rel);
                    }
                    if (_options.PreserveOwnership) Posix.LChown(full, uid, gid);
                    ApplyXattrs(full);
                    _deferred.Add((full, rel.Length == 0 ? 0 : rel.Count(c => c == '/') + 1, mode, sec, nsec));
                    break;
                }

                case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile:
                {
                    EnsureParents(rel, name);
                    string full = Full(rel);
                    Prepare(full, rel, name, isDirectory: false);
                    using (SafeFileHandle fd = Posix.CreateExclusive(full, 0x180))
                    {
                        Stream? data = entry.DataStream;
                        if (sparse)
                        {
                            await WriteSparseAsync(fd, full, name, entry.Length, pax!, data, buffer, ct).ConfigureAwait(false);
                        }
                        else
                        {
                            long written = await CopyAsync(data, fd, full, name, 0, entry.Length, buffer, ct).ConfigureAwait(false);
                            Bytes += written;
                        }
                        if (_options.PreserveOwnership) Posix.FChown(fd, full, uid, gid);
                        Posix.FChangeMode(fd, full, mode);
                    }
                    ApplyXattrs(full);
                    Posix.SetTimes(full, sec, nsec);
                    break;
                }

                case TarEntryType.SymbolicLink:
                {
                    EnsureParents(rel, name);
                    string full = Full(rel);
                    string target = entry.LinkName;
                    if (target.Length == 0 || target.Contains('\0')) throw Refuse(name, "empty or NUL in symlink target");
                    Prepare(full, rel, name, isDirectory: false);
                    Posix.MakeSymlink(target, full);
                    if (_options.PreserveOwnership) Posix.LChown(full, uid, gid);
                    ApplyXattrs(full);
                    Posix.SetTimes(full, sec, nsec);
                    break;
                }

                case TarEntryType.HardLink:
                {
                    string targetRel;
                    try
                    {
                        targetRel = SafeRelative(entry.LinkName);
                    }
                    catch (KaDeployException ex)
                    {
                        throw Refuse(name, $"hard link target '{entry.LinkName}' rejected ({ex.Message})");
                    }
                    if (targetRel.Length == 0) throw Refuse(name, "hard link to the target directory");
                    EnsureParents(rel, name);
                    CheckExistingParents(targetRel, name);
                    string targetFull = Full(targetRel);
                    if (!Posix.TryLStat(targetFull, out FileStatus tst, out int errno))
                    {
                        throw Refuse(name, $"hard link target '{entry.LinkName}' does not exist ({LinuxNative.StrError(errno)})");
                    }
                    if (tst.Kind == FileKind.Directory) throw Refuse(name, $"hard link target '{entry.LinkName}' is a directory");
                    string full = Full(rel);
                    if (full == targetFull) break;
                    Prepare(full, rel, name, isDirectory: false);
                    Posix.MakeHardLink(targetFull, full);
                    break;
                }

                case TarEntryType.CharacterDevice or TarEntryType.BlockDevice or TarEntryType.Fifo:
                {
                    EnsureParents(rel, name);
                    string full = Full(rel);
                    Prepare(full, rel, name, isDirectory: false);
                    // A V7 header may carry these types too (found by fuzzing), but it has no device numbers.
                    if (entry is not PosixTarEntry posix)
                        throw new KaDeployException($"{name}: {type} entry in an old (V7) tar header, which has no device numbers");
                    FileKind kind = type switch
                    {
                        TarEntryType.CharacterDevice => FileKind.CharDevice,
                        TarEntryType.BlockDevice => FileKind.BlockDevice,
                        _ => FileKind.Fifo,
                    };
                    try
                    {
                        Posix.MakeNode(full, kind, 0x180, (uint)posix.DeviceMajor, (uint)posix.DeviceMinor);
                    }
                    catch (KaDeployException ex) when (kind != FileKind.Fifo && !Posix.IsRoot)
                    {
                        _options.Warn?.Invoke($"{ex.Message}; device node skipped (not root)");
                        break;
                    }
                    if (_options.PreserveOwnership) Posix.LChown(full, uid, gid);
                    Posix.ChangeMode(full, mode);
                    ApplyXattrs(full);
                    Posix.SetTimes(full, sec, nsec);
                    break;
                }

                case TarEntryType.SparseFile:
                    throw Refuse(name, "old GNU sparse entries ('S') are not supported");

                default:
                    _options.Warn?.Invoke($"{name}: entry type {type} not supported; skipped");
                    return;
            }
            Entries++;
        }

        /// <summary>Modes and mtimes of directories, deepest first, once nothing more is written inside them.</summary>
        public void FinishDirectories()
        {
            _deferred.Sort((a, b) => b.Depth.CompareTo(a.Depth));
            foreach ((string full, _, uint mode, long sec, uint nsec) in _deferred)
            {
                Posix.ChangeMode(full, mode);
                Posix.SetTimes(full, sec, nsec);
            }
        }

        private static KaDeployException Refuse(string name, string why) =>
            new($"refusing tar entry '{Printable(name)}': {why}");

        private static string Printable(string s) =>
            s.Length > 200 ? string.Concat(Printable(s[..200]), "...") : s.Replace("\0", "\\0", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);

        /// <summary>"./a//b/" becomes "a/b"; absolute names, "..", and NUL bytes are refused.</summary>
        internal static string SafeRelative(string name)
        {
            if (name.Contains('\0')) throw Refuse(name, "NUL byte in name");
            if (name.StartsWith('/')) throw Refuse(name, "absolute path");
            var sb = new StringBuilder(name.Length);
            foreach (string part in name.Split('/'))
            {
                if (part.Length == 0 || part == ".") continue;
                if (part == "..") throw Refuse(name, "'..' component");
                if (sb.Length > 0) sb.Append('/');
                sb.Append(part);
            }
            return sb.ToString();
        }

        // Every parent must be a real directory: created here if missing, refused if it is a symlink or a file.
        private void EnsureParents(string rel, string name)
        {
            int slash = -1;
            while ((slash = rel.IndexOf('/', slash + 1)) >= 0)
            {
                string parent = rel[..slash];
                if (_dirs.Contains(parent)) continue;
                string full = Full(parent);
                if (!Posix.TryLStat(full, out FileStatus st, out int errno))
                {
                    if (errno != LinuxNative.ENOENT) throw Posix.Error("statx", full, errno);
                    Posix.MakeDirectory(full, 0x1ED); // 0755, as tar does for directories the archive does not list
                }
                else if (st.Kind != FileKind.Directory)
                {
                    throw Refuse(name, $"parent '{parent}' is a {Describe(st.Kind)}, not a directory");
                }
                _dirs.Add(parent);
            }
        }

        // For hard-link targets: parents must already exist as real directories.
        private void CheckExistingParents(string rel, string name)
        {
            int slash = -1;
            while ((slash = rel.IndexOf('/', slash + 1)) >= 0)
            {
                string parent = rel[..slash];
                if (_dirs.Contains(parent)) continue;
                if (!Posix.TryLStat(Full(parent), out FileStatus st, out _) || st.Kind != FileKind.Directory)
                {
                    throw Refuse(name, $"hard link target parent '{parent}' is not a directory");
                }
                _dirs.Add(parent);
            }
        }

        private static string Describe(FileKind k) => k switch
        {
            FileKind.Symlink => "symlink",
            FileKind.Regular => "file",
            _ => k.ToString().ToLowerInvariant(),
        };

        // Clears the way for a new entry; returns true if an existing directory is kept (directory over directory).
        private bool Prepare(string full, string rel, string name, bool isDirectory)
        {
            if (!Posix.TryLStat(full, out FileStatus st, out int errno))
            {
                return errno == LinuxNative.ENOENT ? false : throw Posix.Error("statx", full, errno);
            }
            if (st.Kind == FileKind.Directory)
            {
                if (isDirectory) return true;
                try
                {
                    Posix.Remove(full, isDirectory: true);
                }
                catch (KaDeployException ex)
                {
                    throw Refuse(name, $"cannot replace directory ({ex.Message})");
                }
                _dirs.Remove(rel);
                return false;
            }
            Posix.Remove(full, isDirectory: false);
            return false;
        }

        private static (long Sec, uint Nsec) Mtime(TarEntry entry, IReadOnlyDictionary<string, string>? pax)
        {
            if (pax != null && pax.TryGetValue("mtime", out string? s) && TryParseTime(s, out long sec, out uint nsec))
            {
                return (sec, nsec);
            }
            return (entry.ModificationTime.ToUnixTimeSeconds(), 0);
        }

        internal static bool TryParseTime(string s, out long sec, out uint nsec)
        {
            sec = 0;
            nsec = 0;
            bool negative = s.StartsWith('-');
            ReadOnlySpan<char> t = negative ? s.AsSpan(1) : s.AsSpan();
            int dot = t.IndexOf('.');
            ReadOnlySpan<char> whole = dot < 0 ? t : t[..dot];
            if (!long.TryParse(whole, NumberStyles.None, CultureInfo.InvariantCulture, out long w)) return false;
            uint frac = 0;
            if (dot >= 0)
            {
                ReadOnlySpan<char> f = t[(dot + 1)..];
                for (int i = 0; i < 9; i++)
                {
                    int d = i < f.Length ? f[i] - '0' : 0;
                    if (d is < 0 or > 9) return false;
                    frac = frac * 10 + (uint)d;
                }
            }
            if (!negative) { sec = w; nsec = frac; }
            else if (frac == 0) { sec = -w; }
            else { sec = -w - 1; nsec = 1_000_000_000 - frac; }
            return true;
        }

        private void CollectXattrs(IReadOnlyDictionary<string, string>? pax)
        {
            _xattrs.Clear();
            if (pax == null) return;
            foreach ((string key, string value) in pax)
            {
                if (key.StartsWith("LIBARCHIVE.xattr.", StringComparison.Ordinal))
                {
                    byte[]? v = PaxArchiveWriter.DecodeBase64(value);
                    string n = PaxArchiveWriter.DecodeXattrName(key["LIBARCHIVE.xattr.".Length..]);
                    if (v == null) _options.Warn?.Invoke($"xattr {n}: value is not base64; skipped");
                    else _xattrs.Add((n, v));
                }
                else if (key.StartsWith("SCHILY.xattr.", StringComparison.Ordinal))
                {
                    _xattrs.Add((key["SCHILY.xattr.".Length..], Encoding.UTF8.GetBytes(value)));
                }
            }
        }

        private void ApplyXattrs(string full)
        {
            foreach ((string n, byte[] v) in _xattrs)
            {
                if (n.Length == 0 || n.Contains('\0')) continue;
                int errno = Posix.TrySetXattr(full, n, v);
                if (errno != 0) _options.Warn?.Invoke($"lsetxattr {full} {n}: {LinuxNative.StrError(errno)}");
            }
        }

        // Copies `length` bytes of entry data to the file at `offset`; the archive ending early is an error.
        private static async ValueTask<long> CopyAsync(
            Stream? data, SafeFileHandle fd, string full, string name, long offset, long length, byte[] buffer, CancellationToken ct)
        {
            long done = 0;
            while (done < length)
            {
                if (data == null) throw Refuse(name, "entry has no data");
                int want = (int)Math.Min(buffer.Length, length - done);
                int n = await data.ReadAsync(buffer.AsMemory(0, want), ct).ConfigureAwait(false);
                if (n == 0) throw Refuse(name, $"archive ends inside the entry ({done} of {length} bytes)");
                try
                {
                    RandomAccess.Write(fd, buffer.AsSpan(0, n), offset + done);
                }
                catch (IOException ex)
                {
                    throw new KaDeployException($"write {full}: {ex.Message}", ex);
                }
                done += n;
            }
            return done;
        }

        private static async ValueTask<long> CopySkippingZerosAsync(
            Stream data, SafeFileHandle fd, string full, string name, long length, byte[] buffer, CancellationToken ct)
        {
            const int Page = 4096;
            long done = 0, written = 0;
            while (done < length)
            {
                int want = (int)Math.Min(buffer.Length, length - done);
                int got = 0;
                while (got < want)
                {
                    int n = await data.ReadAsync(buffer.AsMemory(got, want - got), ct).ConfigureAwait(false);
                    if (n == 0) throw Refuse(name, $"archive ends inside the entry ({done + got} of {length} bytes)");
                    got += n;
                }
                for (int start = 0; start < got;)
                {
                    int len = Math.Min(Page, got - start);
                    if (!buffer.AsSpan(start, len).ContainsAnyExcept((byte)0)) { start += len; continue; }
                    int end = start + len;
                    while (end < got)
                    {
                        int l = Math.Min(Page, got - end);
                        if (!buffer.AsSpan(end, l).ContainsAnyExcept((byte)0)) break;
                        end += l;
                    }
                    try
                    {
                        RandomAccess.Write(fd, buffer.AsSpan(start, end - start), done + start);
                    }
                    catch (IOException ex)
                    {
                        throw new KaDeployException($"write {full}: {ex.Message}", ex);
                    }
                    written += end - start;
                    start = end;
                }
                done += got;
            }
            return written;
        }

        private async ValueTask WriteSparseAsync(
            SafeFileHandle fd, string full, string name, long entrySize, IReadOnlyDictionary<string, string> pax,
            Stream? data, byte[] buffer, CancellationToken ct)
        {
            if (!pax.TryGetValue("GNU.sparse.realsize", out string? rs) ||
                !long.TryParse(rs, NumberStyles.None, CultureInfo.InvariantCulture, out long realSize) ||
                realSize > MaxEntrySize)
            {
                throw Refuse(name, $"sparse realsize '{rs}' missing or absurd");
            }
            if (data == null) throw Refuse(name, "sparse entry has no data");

            long dataLength;
            try
            {
                dataLength = data.Length;
            }
            catch (NotSupportedException)
            {
                dataLength = entrySize;
            }
            if (dataLength != entrySize && dataLength == realSize)
            {
                // A TarReader that expands GNU sparse 1.0 itself (newer runtimes) hands over the content with holes
                // as zeros: write it back skipping zero blocks.
                Bytes += await CopySkippingZerosAsync(data, fd, full, name, realSize, buffer, ct).ConfigureAwait(false);
                Posix.Truncate(fd, full, realSize);
                return;
            }

            // The map: decimal numbers, one a line (count, then offset/length pairs), padded to 512 bytes.
            // Read a block at a time so that exactly the padded map is consumed.
            var numbers = new List<long>();
            long count = -1;
            long mapBytes = 0;
            var digits = new StringBuilder(24);
            while (count < 0 || numbers.Count < 2 * count)
            {
                if (mapBytes >= MaxSparseMapBytes) throw Refuse(name, $"sparse map longer than {MaxSparseMapBytes} bytes");
                int got = 0;
                while (got < PaxArchiveWriter.Block)
                {
                    int n = await data.ReadAsync(buffer.AsMemory(got, PaxArchiveWriter.Block - got), ct).ConfigureAwait(false);
                    if (n == 0) throw Refuse(name, "archive ends inside the sparse map");
                    got += n;
                }
                mapBytes += PaxArchiveWriter.Block;
                for (int i = 0; i < PaxArchiveWriter.Block && (count < 0 || numbers.Count < 2 * count); i++)
                {
                    byte b = buffer[i];
                    if (b == '\n')
                    {
                        if (digits.Length == 0 || !long.TryParse(digits.ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out long v))
                        {
                            throw Refuse(name, "malformed sparse map");
                        }
                        digits.Clear();
                        if (count < 0)
                        {
                            if (v > MaxSparseSegments) throw Refuse(name, $"sparse map with {v} segments");
                            count = v;
                        }
                        else
                        {
                            numbers.Add(v);
                        }
                    }
                    else if (b is >= (byte)'0' and <= (byte)'9' && digits.Length < 20)
                    {
                        digits.Append((char)b);
                    }
                    else
                    {
                        throw Refuse(name, "malformed sparse map");
                    }
                }
            }

            long end = 0, dataBytes = 0;
            for (int i = 0; i < numbers.Count; i += 2)
            {
                long off = numbers[i], len = numbers[i + 1];
                if (off < end || len > realSize || off > realSize - len)
                {
                    throw Refuse(name, $"sparse segment {off}+{len} overlaps or lies beyond realsize {realSize}");
                }
                end = off + len;
                dataBytes += len;
            }
            if (mapBytes + dataBytes != entrySize)
            {
                throw Refuse(name, $"sparse map describes {dataBytes} data bytes but the entry holds {entrySize - mapBytes}");
            }

            for (int i = 0; i < numbers.Count; i += 2)
            {
                Bytes += await CopyAsync(data, fd, full, name, numbers[i], numbers[i + 1], buffer, ct).ConfigureAwait(false);
            }
            Posix.Truncate(fd, full, realSize);
        }
    }
}
