using System.Globalization;
using System.Text;
using KaDeploy.Platform;
using Microsoft.Win32.SafeHandles;

namespace KaDeploy.Payloads.Tar;

/// <summary>Settings for <see cref="TarTreeSource"/>.</summary>
public sealed record TarTreeSourceOptions
{
    /// <summary>The directory whose contents are archived (the root itself gets no entry).</summary>
    public required string Root { get; init; }

    /// <summary>Do not descend into directories on another file system (the mount point itself is kept, empty).</summary>
    public bool OneFileSystem { get; init; }

    /// <summary>
    /// Paths to leave out, relative to <see cref="Root"/> or absolute under it; shell globs allowed ('*', '?', "[...]",
    /// "**"). Put <see cref="TarTreeSource.DefaultExclusions"/> here when cloning a running system.
    /// </summary>
    public IReadOnlyList<string> Excludes { get; init; } = [];

    /// <summary>Receives non-fatal problems (sockets skipped, files that changed while read). Null: ignored.</summary>
    public Action<string>? Warn { get; init; }

    /// <summary>Size of the pooled output buffer; file data is read straight into it.</summary>
    public int BufferSize { get; init; } = 1 << 20;
}

/// <summary>
/// Streams a directory tree as a pax archive: numeric owners, full modes, nanosecond mtimes, symlinks verbatim,
/// hard links, device nodes, FIFOs, xattrs (LIBARCHIVE.xattr.*), and sparse files in GNU sparse format 1.0.
/// Memory stays bounded by the buffer size and the directory depth.
/// </summary>
public sealed class TarTreeSource : IPayloadSource, IPayloadEstimate
{
    private const int MinRead = 64 * 1024;
    private readonly TarTreeSourceOptions _options;
    private readonly PathExclusions _exclusions;

    public TarTreeSource(TarTreeSourceOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(options.Root);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.BufferSize, 16 * 1024);
        _options = options;
        _exclusions = new PathExclusions(options.Root, options.Excludes);
    }

    /// <inheritdoc/>
    public PayloadKind Kind => PayloadKind.Tar;

    /// <inheritdoc/>
    public long? EstimatedLength => null;

    /// <inheritdoc/>
    public string Description => $"tree {_options.Root}";

    /// <summary>Bytes of archive written by the last <see cref="WriteToAsync"/>.</summary>
    public long BytesWritten { get; private set; }

    /// <summary>Entries written by the last <see cref="WriteToAsync"/>.</summary>
    public long EntriesWritten { get; private set; }

    /// <summary>
    /// The archive's size from a metadata walk (no file is read): each entry's header blocks computed with the
    /// writer's own rules (pax records for long or non-ASCII names and link targets, nanosecond mtimes, large ids),
    /// regular files' data rounded to blocks, hard links as links, the end-of-archive blocks. Exact for a tree that
    /// holds no xattrs, ACLs or sparse files and does not change meanwhile; xattrs (one llistxattr per entry would cost
    /// as much as the walk) are left out and sparse files counted by their allocated blocks. It also warms the
    /// metadata cache for the real walk.
    /// </summary>
    public Task<long> EstimateLengthAsync(CancellationToken cancellationToken) => Task.Run(() =>
    {
        long total = 2 * PaxArchiveWriter.Block; // end of archive
        var firstNameOfInode = new Dictionary<(ulong Dev, ulong Ino), (byte[] Name, uint Left)>();
        foreach (TreeEntry e in TreeWalker.Walk(_options.Root, _exclusions, _options.OneFileSystem, null))
        {
            cancellationToken.ThrowIfCancellationRequested();
            FileStatus st = e.Status;
            byte[] name = e.Relative;
            byte[]? link = null;
            long data = 0;
            switch (st.Kind)
            {
                case FileKind.Directory:
                    name = [.. e.Relative, (byte)'/'];
                    break;
                case FileKind.Socket:
                    continue;
                case FileKind.Symlink or FileKind.Regular or FileKind.CharDevice or FileKind.BlockDevice or FileKind.Fifo:
                    if (IsSecondLink(firstNameOfInode, e, out byte[] first))
                    {
                        link = first;
                        break;
                    }
                    if (st.Kind == FileKind.Symlink)
                    {
                        link = PosixAt.ReadLink(e.DirFd, e.Name, out _);
                        if (link == null) continue; // vanished: the real walk will say so
                    }
                    else if (st.Kind == FileKind.Regular)
                    {
                        data = st.Size > 0 && st.Blocks * 512 < st.Size
                            ? st.Blocks * 512 + PaxArchiveWriter.Block // sparse: allocated data and its map
                            : st.Size;
                    }
                    break;
            }
            total += PaxArchiveWriter.HeaderBytes(name, link, link != null, st.MtimeSec, st.MtimeNsec, st.Uid, st.Gid, data, 0);
            total += (data + PaxArchiveWriter.Block - 1) / PaxArchiveWriter.Block * PaxArchiveWriter.Block;
        }
        return total;
    }, cancellationToken);

    /// <summary>
    /// What cloning a running system should leave out: the contents of /proc, /sys, /dev, /run and /tmp under
    /// <paramref name="root"/> (the directories themselves are kept, empty), plus <paramref name="extra"/>
    /// (for example the mount point of the target).
    /// </summary>
    public static IReadOnlyList<string> DefaultExclusions(string root, params IEnumerable<string> extra)
    {
        ArgumentNullException.ThrowIfNull(root);
        string r = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        if (r == "/") r = "";
        var list = new List<string>();
        foreach (string d in (string[])["proc", "sys", "dev", "run", "tmp"]) list.Add($"{r}/{d}/*");
        list.AddRange(extra);
        return list;
    }

    /// <inheritdoc/>
    public async Task WriteToAsync(Stream output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(output);
        using var w = new PaxArchiveWriter(output, _options.BufferSize);
        var firstNameOfInode = new Dictionary<(ulong Dev, ulong Ino), (byte[] Name, uint Left)>();
        long entries = 0;
        Action<string>? warn = _options.Warn;

        foreach (TreeEntry e in TreeWalker.Walk(_options.Root, _exclusions, _options.OneFileSystem, warn))
        {
            cancellationToken.ThrowIfCancellationRequested();
            FileStatus st = e.Status;
            w.BeginRecords();
            switch (st.Kind)
            {
                case FileKind.Directory:
                    AddXattrs(w, e);
                    await w.WriteHeaderAsync([.. e.Relative, (byte)'/'], '5', st.Permissions, st.Uid, st.Gid, 0,
                        st.MtimeSec, st.MtimeNsec, null, 0, 0, cancellationToken).ConfigureAwait(false);
                    break;

                case FileKind.Symlink:
                    // A symlink can have several names too (link(2) does not follow it); GNU tar keeps them one inode.
                    if (IsSecondLink(firstNameOfInode, e, out byte[] firstOfLink))
                    {
                        await WriteHardLinkAsync(w, e, firstOfLink, cancellationToken).ConfigureAwait(false);
                        break;
                    }
                    byte[] target = PosixAt.ReadLink(e.DirFd, e.Name, out int lerr)
                        ?? throw Posix.Error("readlink", ByteNames.Printable(e.Full), lerr);
                    AddXattrs(w, e);
                    await w.WriteHeaderAsync(e.Relative, '2', st.Permissions, st.Uid, st.Gid, 0,
                        st.MtimeSec, st.MtimeNsec, target, 0, 0, cancellationToken).ConfigureAwait(false);
                    break;

                case FileKind.CharDevice or FileKind.BlockDevice or FileKind.Fifo:
                    if (IsSecondLink(firstNameOfInode, e, out byte[] first))
                    {
                        await WriteHardLinkAsync(w, e, first, cancellationToken).ConfigureAwait(false);
                        break;
                    }
                    AddXattrs(w, e);
                    char flag = st.Kind switch { FileKind.CharDevice => '3', FileKind.BlockDevice => '4', _ => '6' };
                    await w.WriteHeaderAsync(e.Relative, flag, st.Permissions, st.Uid, st.Gid, 0,
                        st.MtimeSec, st.MtimeNsec, null, st.RdevMajor, st.RdevMinor, cancellationToken).ConfigureAwait(false);
                    break;

                case FileKind.Regular:
                    if (IsSecondLink(firstNameOfInode, e, out byte[] firstName))
                    {
                        await WriteHardLinkAsync(w, e, firstName, cancellationToken).ConfigureAwait(false);
                        break;
                    }
                    if (st.Size == 0 && e.SizeIsExact)
                    {
                        // Nothing to read: no open, pread and close (GNU tar does not open an empty file either). A
                        // file that grows meanwhile is archived as its stat said, as any file is at its stat size.
                        if (!AddXattrs(w, e, vanishedIsSkip: true))
                        {
                            warn?.Invoke($"{ByteNames.Printable(e.Full)} vanished before it was read; skipped");
                            continue;
                        }
                        await w.WriteHeaderAsync(e.Relative, '0', st.Permissions, st.Uid, st.Gid, 0,
                            st.MtimeSec, st.MtimeNsec, null, 0, 0, cancellationToken).ConfigureAwait(false);
                        break;
                    }
                    if (!await WriteRegularAsync(w, e, cancellationToken).ConfigureAwait(false)) continue;
                    break;

                case FileKind.Socket:
                    // A socket is made by the program that listens on it; tar, bsdtar and rsync leave it out too.
                    warn?.Invoke($"{ByteNames.Printable(e.Full)} is a socket; skipped");
                    continue;

                default:
                    throw new KaDeployException($"{ByteNames.Printable(e.Full)} has unknown file type {st.Mode:X}");
            }
            entries++;
        }

        await w.FinishAsync(cancellationToken).ConfigureAwait(false);
        BytesWritten = w.BytesWritten;
        EntriesWritten = entries;
    }

    // The first name of each multiply linked inode, until its last link has been met: a tree whose links all live
    // near each other (the usual case) keeps this table small whatever its size (issue 14: memory independent of
    // the number of entries). Links that lead outside the tree never reach the count and stay, one name each.
    private static bool IsSecondLink(Dictionary<(ulong, ulong), (byte[] Name, uint Left)> seen, in TreeEntry e, out byte[] first)
    {
        first = [];
        if (e.Status.Nlink <= 1) return false;
        var key = (e.Status.Device, e.Status.Inode);
        if (seen.TryGetValue(key, out var f))
        {
            first = f.Name;
            if (f.Left <= 1) seen.Remove(key);
            else seen[key] = (f.Name, f.Left - 1);
            return true;
        }
        seen.Add(key, (e.Relative, e.Status.Nlink - 1));
        return false;
    }

    private static ValueTask WriteHardLinkAsync(PaxArchiveWriter w, in TreeEntry e, byte[] first, CancellationToken ct) =>
        w.WriteHeaderAsync(e.Relative, '1', e.Status.Permissions, e.Status.Uid, e.Status.Gid, 0,
            e.Status.MtimeSec, e.Status.MtimeNsec, first, 0, 0, ct);

    // SCHILY.xattr.NAME=raw bytes, as GNU tar writes and both GNU tar and bsdtar read: a pax record is
    // length-prefixed, so a binary value (security.capability, security.ima) needs no encoding. A name with '='
    // cannot be a SCHILY key; it goes as LIBARCHIVE.xattr (percent-encoded name, base64 value), which bsdtar reads.
    // Of an open file (flistxattr), or of a walked entry by its name under its directory's fd, not followed
    // (listxattrat; llistxattr by path on kernels before 6.13). False when the entry vanished and vanishedIsSkip.
    private static void AddXattrs(PaxArchiveWriter w, byte[] path, int fd) => AddXattrs(w, path, fd, null, false);

    private static bool AddXattrs(PaxArchiveWriter w, in TreeEntry e, bool vanishedIsSkip = false) =>
        AddXattrs(w, e.Full, e.DirFd, e.Name, vanishedIsSkip);

    private static bool AddXattrs(PaxArchiveWriter w, byte[] path, int fd, byte[]? name, bool vanishedIsSkip)
    {
        List<byte[]>? listed = name is null ? PosixAt.ListXattrs(fd, out int errno) : PosixAt.ListXattrsAt(fd, name, path, out errno);
        if (listed is null && vanishedIsSkip && errno == LinuxNative.ENOENT) return false;
        List<byte[]> names = listed ?? throw Posix.Error("llistxattr", ByteNames.Printable(path), errno);
        foreach (byte[] attr in names)
        {
            byte[]? value = name is null ? PosixAt.GetXattr(fd, attr, out errno) : PosixAt.GetXattrAt(fd, name, path, attr, out errno);
            if (value == null)
            {
                if (errno == LinuxNative.ENODATA) continue; // removed since it was listed
                throw Posix.Error($"lgetxattr {ByteNames.Printable(attr)}", ByteNames.Printable(path), errno);
            }
            // POSIX ACLs go as SCHILY.acl.access/default text, the form GNU tar --acls and bsdtar --acls restore
            // (neither applies system.posix_acl_* from xattr records).
            bool access = attr.AsSpan().SequenceEqual("system.posix_acl_access"u8), dflt = attr.AsSpan().SequenceEqual("system.posix_acl_default"u8);
            if ((access || dflt) && PosixAcl.ToText(value) is byte[] text)
            {
                w.AddRecord(access ? "SCHILY.acl.access"u8 : "SCHILY.acl.default"u8, text);
                continue;
            }
            if (!attr.AsSpan().Contains((byte)'='))
            {
                w.AddRecord([.. "SCHILY.xattr."u8, .. attr], value);
            }
            else
            {
                w.AddRecord("LIBARCHIVE.xattr." + PaxArchiveWriter.EncodeXattrName(attr), PaxArchiveWriter.EncodeBase64(value));
            }
        }
        return true;
    }

    // Returns false when the file vanished before it could be opened (nothing was written).
    private async ValueTask<bool> WriteRegularAsync(PaxArchiveWriter w, TreeEntry e, CancellationToken ct)
    {
        FileStatus st = e.Status;
        int fd = PosixAt.OpenReadFd(e.DirFd, e.Name, out int errno);
        if (fd < 0)
        {
            if (errno != LinuxNative.ENOENT) throw Posix.Error("open", ByteNames.Printable(e.Full), errno);
            _options.Warn?.Invoke($"{ByteNames.Printable(e.Full)} vanished before it was read; skipped");
            return false;
        }

        try
        {
            List<(long Offset, long Length)>? segments = null;
            if (st.Size > 0 && st.Blocks * 512 < st.Size)
            {
                using var handle = new SafeFileHandle(fd, ownsHandle: false);
                segments = Posix.DataSegments(handle, st.Size);
                if (segments.Count == 1 && segments[0] == (0, st.Size)) segments = null;
            }

            AddXattrs(w, e.Full, fd);
            if (segments == null)
            {
                await w.WriteHeaderAsync(e.Relative, '0', st.Permissions, st.Uid, st.Gid, st.Size,
                    st.MtimeSec, st.MtimeNsec, null, 0, 0, ct).ConfigureAwait(false);
                await CopyRangeAsync(w, fd, e.Full, 0, st.Size, checkGrowth: true, ct).ConfigureAwait(false);
                await w.PadAsync(st.Size, ct).ConfigureAwait(false);
                return true;
            }

            // GNU sparse 1.0: the data starts with the decimal map, padded to a block, then only the data segments.
            // GNU tar sizes the file from the map's last segment, so a trailing hole needs an empty segment at the end.
            if (segments.Count == 0 || segments[^1].Offset + segments[^1].Length < st.Size) segments.Add((st.Size, 0));
            var map = new StringBuilder();
            map.Append(segments.Count.ToString(CultureInfo.InvariantCulture)).Append('\n');
            long dataBytes = 0;
            foreach ((long off, long len) in segments)
            {
                map.Append(off.ToString(CultureInfo.InvariantCulture)).Append('\n')
                   .Append(len.ToString(CultureInfo.InvariantCulture)).Append('\n');
                dataBytes += len;
            }
            byte[] mapBytes = Encoding.ASCII.GetBytes(map.ToString());
            long mapPadded = (mapBytes.Length + PaxArchiveWriter.Block - 1) / PaxArchiveWriter.Block * PaxArchiveWriter.Block;
            long total = mapPadded + dataBytes;

            int slash = Array.LastIndexOf(e.Relative, (byte)'/');
            byte[] fakeName = slash < 0
                ? [.. "GNUSparseFile.0/"u8, .. e.Relative]
                : [.. e.Relative.AsSpan(0, slash), .. "/GNUSparseFile.0/"u8, .. e.Relative.AsSpan(slash + 1)];
            w.AddRecord("GNU.sparse.major", "1");
            w.AddRecord("GNU.sparse.minor", "0");
            w.AddNameRecord("GNU.sparse.name"u8, e.Relative);
            w.AddRecord("GNU.sparse.realsize", st.Size.ToString(CultureInfo.InvariantCulture));
            await w.WriteHeaderAsync(fakeName, '0', st.Permissions, st.Uid, st.Gid, total,
                st.MtimeSec, st.MtimeNsec, null, 0, 0, ct).ConfigureAwait(false);
            await w.WriteBytesAsync(mapBytes, ct).ConfigureAwait(false);
            await w.PadAsync(mapBytes.Length, ct).ConfigureAwait(false);
            foreach ((long off, long len) in segments)
            {
                await CopyRangeAsync(w, fd, e.Full, off, len, checkGrowth: false, ct).ConfigureAwait(false);
            }
            await w.PadAsync(total, ct).ConfigureAwait(false);
            return true;
        }
        finally
        {
            LinuxNative.Close(fd);
        }
    }

    // Copies exactly `length` bytes from `offset`, padding with zeros (and warning) if the file shrank meanwhile.
    // With checkGrowth the last read asks for one byte more than is left: a file that grew is noticed by the read
    // that was needed anyway, not by one more pread per file.
    // While at least MinRead bytes are left and the output lends its memory (the server's ring slot), the data is read
    // straight into it: one copy per byte fewer than through the writer's buffer (issue 14's /usr row). The tail, and
    // the growth check with it, goes through the buffer.
    private async ValueTask CopyRangeAsync(PaxArchiveWriter w, int fd, byte[] path, long offset, long length, bool checkGrowth, CancellationToken ct)
    {
        long end = offset + length;
        while (offset < end || checkGrowth)
        {
            long remaining = end - offset;
            bool direct = w.Lends && remaining >= MinRead;
            Memory<byte> free;
            if (direct)
            {
                free = await w.LendAsync(ct).ConfigureAwait(false);
            }
            else
            {
                await w.EnsureFreeAsync((int)Math.Min(remaining + 1, MinRead), ct).ConfigureAwait(false);
                free = w.Free;
            }
            int want = (int)Math.Min(remaining + (checkGrowth ? 1 : 0), free.Length);
            int n = PosixAt.Read(fd, free.Span[..want], offset, out int errno);
            if (n < 0)
            {
                if (errno == LinuxNative.EINTR) continue;
                throw new KaDeployException($"read {ByteNames.Printable(path)}: {LinuxNative.StrError(errno)}");
            }
            if (n > remaining)
            {
                _options.Warn?.Invoke($"{ByteNames.Printable(path)} grew while read; archived its first {end} bytes");
                n = (int)remaining;
                checkGrowth = false;
            }
            else if (n < want)
            {
                checkGrowth = false; // a short read of a regular file is its end
            }
            if (n == 0 && remaining > 0)
            {
                _options.Warn?.Invoke($"{ByteNames.Printable(path)} shrank while read; padded with {remaining} zero bytes");
                await w.WriteZerosAsync(remaining, ct).ConfigureAwait(false);
                return;
            }
            if (direct) w.AdvanceLent(n);
            else w.Advance(n);
            offset += n;
        }
    }
}
