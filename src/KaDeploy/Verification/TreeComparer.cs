using System.Buffers;
using KaDeploy.Payloads.Tar;
using KaDeploy.Platform;
using Microsoft.Win32.SafeHandles;

namespace KaDeploy.Verification;

/// <summary>Settings for <see cref="TreeComparer.Compare"/>.</summary>
public sealed record TreeComparisonOptions
{
    /// <summary>Paths left out on both sides (same syntax as <see cref="TarTreeSourceOptions.Excludes"/>).</summary>
    public IReadOnlyList<string> Excludes { get; init; } = [];

    /// <summary>Do not compare the mtimes of directories and symlinks.</summary>
    public bool IgnoreDirectoryAndSymlinkMtimes { get; init; }

    /// <summary>Compare numeric uid/gid (turn off when the copy was made without root).</summary>
    public bool CompareOwnership { get; init; } = true;

    /// <summary>Stop after this many differences.</summary>
    public int MaxDifferences { get; init; } = 1000;
}

/// <summary>
/// Proves two trees identical: type, mode with special bits, owner, nanosecond mtime, size and bytes, symlink
/// targets, hard-link groups, device numbers, every xattr (binary), and holes (a sparse original must not be
/// fully allocated in the copy). The roots themselves are not compared. Names, link targets and xattr names are
/// compared as bytes: entries are keyed by <see cref="ByteNames.Printable"/> of their bytes (one printed form per
/// name, so two names that are not valid UTF-8 never share a key), and every file is opened by its byte path.
/// </summary>
public static class TreeComparer
{
    private const int ChunkSize = 1 << 20;

    /// <summary>
    /// Returns one human-readable line per difference ("etc/shadow: mode 0640 vs 0644", expected value first);
    /// empty when the trees are identical.
    /// </summary>
    public static IReadOnlyList<string> Compare(string expectedRoot, string actualRoot, TreeComparisonOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(expectedRoot);
        ArgumentException.ThrowIfNullOrEmpty(actualRoot);
        options ??= new TreeComparisonOptions();
        var diffs = new List<string>();
        Dictionary<string, TreeEntry> a = Load(expectedRoot, options);
        Dictionary<string, TreeEntry> b = Load(actualRoot, options);
        Dictionary<string, string> leadersA = LinkLeaders(a), leadersB = LinkLeaders(b);

        var names = new SortedSet<string>(a.Keys, StringComparer.Ordinal);
        names.UnionWith(b.Keys);
        byte[] bufA = ArrayPool<byte>.Shared.Rent(ChunkSize), bufB = ArrayPool<byte>.Shared.Rent(ChunkSize);
        try
        {
            foreach (string rel in names)
            {
                if (diffs.Count >= options.MaxDifferences)
                {
                    diffs.Add($"... stopped after {options.MaxDifferences} differences");
                    break;
                }
                bool inA = a.TryGetValue(rel, out TreeEntry ea), inB = b.TryGetValue(rel, out TreeEntry eb);
                if (!inB) { diffs.Add($"{rel}: missing from copy"); continue; }
                if (!inA) { diffs.Add($"{rel}: only in copy"); continue; }
                CompareEntry(rel, ea, eb, options, leadersA, leadersB, bufA, bufB, diffs);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bufA);
            ArrayPool<byte>.Shared.Return(bufB);
        }
        return diffs;
    }

    private static Dictionary<string, TreeEntry> Load(string root, TreeComparisonOptions options)
    {
        var exclusions = new PathExclusions(root, options.Excludes);
        var map = new Dictionary<string, TreeEntry>(StringComparer.Ordinal);
        foreach (TreeEntry e in TreeWalker.Walk(root, exclusions, oneFileSystem: false, warn: null)) map[Key(e.Relative)] = e;
        return map;
    }

    // For every name of a multiply-linked inode, the first name (ordinal) of its group.
    private static Dictionary<string, string> LinkLeaders(Dictionary<string, TreeEntry> tree)
    {
        var first = new Dictionary<(ulong, ulong), string>();
        var leaders = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string rel in tree.Keys.Order(StringComparer.Ordinal))
        {
            FileStatus st = tree[rel].Status;
            if (st.Kind == FileKind.Directory || st.Nlink <= 1) continue;
            var key = (st.Device, st.Inode);
            if (!first.TryGetValue(key, out string? leader)) first[key] = leader = rel;
            leaders[rel] = leader;
        }
        return leaders;
    }

    // Decoding a name as UTF-8 maps every invalid byte to U+FFFD, so "a\xff" and "a\xfe" would be one key and a file
    // missing from the copy could hide behind its namesake; the printable form is one string per byte sequence.
    private static string Key(byte[] name) => ByteNames.Printable(name, int.MaxValue);

    private static string Octal(uint v) => Convert.ToString(v, 8).PadLeft(4, '0');

    private static void CompareEntry(
        string rel, TreeEntry ea, TreeEntry eb, TreeComparisonOptions options,
        Dictionary<string, string> leadersA, Dictionary<string, string> leadersB, byte[] bufA, byte[] bufB, List<string> diffs)
    {
        FileStatus a = ea.Status, b = eb.Status;
        if (a.Kind != b.Kind)
        {
            diffs.Add($"{rel}: type {a.Kind} vs {b.Kind}");
            return;
        }
        if (a.Kind != FileKind.Symlink && a.Permissions != b.Permissions)
        {
            diffs.Add($"{rel}: mode {Octal(a.Permissions)} vs {Octal(b.Permissions)}");
        }
        if (options.CompareOwnership && (a.Uid != b.Uid || a.Gid != b.Gid))
        {
            diffs.Add($"{rel}: owner {a.Uid}:{a.Gid} vs {b.Uid}:{b.Gid}");
        }
        bool skipMtime = options.IgnoreDirectoryAndSymlinkMtimes && a.Kind is FileKind.Directory or FileKind.Symlink;
        if (!skipMtime && (a.MtimeSec != b.MtimeSec || a.MtimeNsec != b.MtimeNsec))
        {
            diffs.Add($"{rel}: mtime {a.MtimeSec}.{a.MtimeNsec:D9} vs {b.MtimeSec}.{b.MtimeNsec:D9}");
        }
        leadersA.TryGetValue(rel, out string? la);
        leadersB.TryGetValue(rel, out string? lb);
        if (la != lb)
        {
            diffs.Add($"{rel}: hard-linked with {la ?? "nothing"} vs {lb ?? "nothing"}");
        }

        switch (a.Kind)
        {
            case FileKind.Regular:
                if (a.Size != b.Size)
                {
                    diffs.Add($"{rel}: size {a.Size} vs {b.Size}");
                }
                else if (FirstDifference(ea.Full, eb.Full, a.Size, bufA, bufB) is long at)
                {
                    diffs.Add($"{rel}: content differs at byte {at}");
                }
                if (a.Blocks * 512 < a.Size)
                {
                    long tolerance = Math.Max(a.Blocks / 10, 128); // 64 KiB or 10 %: block sizes differ between file systems
                    if (b.Blocks > a.Blocks + tolerance)
                    {
                        diffs.Add($"{rel}: holes lost ({a.Blocks} vs {b.Blocks} blocks allocated for {a.Size} bytes)");
                    }
                }
                break;
            case FileKind.Symlink:
                byte[] ta = ReadLink(ea.Full), tb = ReadLink(eb.Full);
                if (!ta.AsSpan().SequenceEqual(tb)) diffs.Add($"{rel}: symlink target '{Key(ta)}' vs '{Key(tb)}'");
                break;
            case FileKind.CharDevice or FileKind.BlockDevice:
                if (a.RdevMajor != b.RdevMajor || a.RdevMinor != b.RdevMinor)
                {
                    diffs.Add($"{rel}: device {a.RdevMajor}:{a.RdevMinor} vs {b.RdevMajor}:{b.RdevMinor}");
                }
                break;
        }
        CompareXattrs(rel, ea.Full, eb.Full, diffs);
    }

    private static byte[] ReadLink(byte[] path) =>
        PosixAt.ReadLink(LinuxNative.AT_FDCWD, path, out int errno) ?? throw Failure("readlink", path, errno);

    private static Exception Failure(string call, byte[] path, int errno) =>
        new IOException($"{call} {Key(path)}: {LinuxNative.StrError(errno)}");

    private static void CompareXattrs(string rel, byte[] pa, byte[] pb, List<string> diffs)
    {
        Dictionary<string, byte[]> na = Xattrs(pa), nb = Xattrs(pb);
        foreach (string n in na.Keys.Except(nb.Keys, StringComparer.Ordinal)) diffs.Add($"{rel}: xattr {n} missing from copy");
        foreach (string n in nb.Keys.Except(na.Keys, StringComparer.Ordinal)) diffs.Add($"{rel}: xattr {n} only in copy");
        foreach (string n in na.Keys.Intersect(nb.Keys, StringComparer.Ordinal))
        {
            byte[]? va = PosixAt.GetXattr(pa, na[n], out _), vb = PosixAt.GetXattr(pb, nb[n], out _);
            if (!(va ?? []).AsSpan().SequenceEqual(vb ?? []))
            {
                diffs.Add($"{rel}: xattr {n} = {Convert.ToHexString(va ?? [])} vs {Convert.ToHexString(vb ?? [])}");
            }
        }
    }

    // Printable name -> the name's bytes.
    private static Dictionary<string, byte[]> Xattrs(byte[] path)
    {
        List<byte[]> names = PosixAt.ListXattrs(path, out int errno) ?? throw Failure("listxattr", path, errno);
        return names.ToDictionary(n => Key(n), StringComparer.Ordinal);
    }

    private static long? FirstDifference(byte[] pa, byte[] pb, long size, byte[] bufA, byte[] bufB)
    {
        using SafeFileHandle fa = PosixAt.OpenRead(LinuxNative.AT_FDCWD, pa, out int ea) ?? throw Failure("open", pa, ea);
        using SafeFileHandle fb = PosixAt.OpenRead(LinuxNative.AT_FDCWD, pb, out int eb) ?? throw Failure("open", pb, eb);
        long offset = 0;
        while (offset < size)
        {
            int want = (int)Math.Min(ChunkSize, size - offset);
            int ra = IO.PositionalRead.Full(fa, bufA.AsSpan(0, want), offset), rb = IO.PositionalRead.Full(fb, bufB.AsSpan(0, want), offset);
            int n = Math.Min(ra, rb);
            int mismatch = bufA.AsSpan(0, n).CommonPrefixLength(bufB.AsSpan(0, n));
            if (mismatch < n || ra != rb) return offset + mismatch;
            if (n == 0) return null;
            offset += n;
        }
        return null;
    }
}
