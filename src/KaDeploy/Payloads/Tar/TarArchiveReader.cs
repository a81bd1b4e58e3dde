using System.Buffers;
using System.Buffers.Text;
using KaDeploy.Platform;

namespace KaDeploy.Payloads.Tar;

/// <summary>
/// A byte-level reader of tar archives over 512-byte blocks, written for fidelity and for hostile input:
/// v7, ustar, old GNU and GNU, pax (local 'x' and global 'g' records, hdrcharset ignored because names stay bytes)
/// and star headers; GNU long names and links ('L', 'K'); GNU sparse files in every version (old 'S' with extension
/// blocks, pax 0.0, 0.1 and 1.0); xattrs from SCHILY.xattr.* (raw bytes), LIBARCHIVE.xattr.* (base64) and
/// RHT.security.selinux; POSIX ACLs from SCHILY.acl.access/default; base-256 and negative numbers; fractional and
/// negative pax times; fields of spaces; ustar version "\0\0"; a v7 "regular" entry whose name ends in '/' is a
/// directory without data, as GNU tar and libarchive read it; a hard link's size is obeyed only in pax archives
/// (libarchive's rule). Nothing is decoded as text, so no name can be rewritten or two names merged.
/// Every length is checked before anything is allocated; a header that does not check out stops the read with
/// the offset and the reason. See README "Archive fidelity" for why this reader and not System.Formats.Tar or libarchive.
/// </summary>
internal sealed class TarArchiveReader : IDisposable
{
    internal const int Block = 512;

    private readonly Stream _input;
    private readonly KaDeploy.IO.ISegmentReader? _lender; // the input lends its bytes (a node's ring slot, through the digest)
    private readonly int _maxMetadata;
    private readonly Action<string>? _warn;
    private byte[] _buf;
    private int _pos;
    private int _len;
    private bool _eof;
    private long _consumed;          // archive bytes before _buf[_pos]
    private long _remaining;         // data bytes of the current entry not yet delivered
    private long _padding;           // padding after them
    private byte[] _current = [];    // name of the current entry (made printable only for an error: not per entry)
    private readonly List<(byte[] Key, byte[] Value)> _global = [];
    private bool _sawPax;
    private readonly HashSet<string> _unknownWarned = new(StringComparer.Ordinal);

    public TarArchiveReader(Stream input, int maxMetadataBytes, Action<string>? warn, int bufferSize = 1 << 20)
    {
        _input = input;
        _lender = input as KaDeploy.IO.ISegmentReader;
        _maxMetadata = maxMetadataBytes;
        _warn = warn;
        _buf = ArrayPool<byte>.Shared.Rent(Math.Max(bufferSize, 64 * 1024));
    }

    /// <summary>Archive bytes consumed so far.</summary>
    public long Position => _consumed;

    public void Dispose()
    {
        byte[] b = _buf;
        _buf = [];
        if (b.Length > 0) ArrayPool<byte>.Shared.Return(b);
    }

    private static KaDeployException Malformed(long offset, string why) =>
        new($"malformed tar stream at byte {offset}: {why}");

    private KaDeployException EntryError(string why) => new($"refusing tar entry '{ByteNames.Printable(_current)}': {why}");

    // ---- buffered input ---------------------------------------------------------------------------------------

    private int Buffered => _len - _pos;

    /// <summary>Makes at least <paramref name="n"/> bytes available in the buffer; false at end of input (fewer left).</summary>
    private async ValueTask<bool> EnsureAsync(int n, CancellationToken ct)
    {
        while (Buffered < n)
        {
            if (_eof) return false;
            if (_pos > 0)
            {
                Buffer.BlockCopy(_buf, _pos, _buf, 0, Buffered);
                _len -= _pos;
                _pos = 0;
            }
            int got = await _input.ReadAsync(_buf.AsMemory(_len), ct).ConfigureAwait(false);
            if (got == 0) _eof = true;
            _len += got;
        }
        return true;
    }

    private void Consume(int n)
    {
        _pos += n;
        _consumed += n;
    }

    private async ValueTask SkipAsync(long n, CancellationToken ct)
    {
        while (n > 0)
        {
            if (Buffered == 0 && !await EnsureAsync(1, ct).ConfigureAwait(false))
            {
                throw EntryError($"archive ends inside the entry ({n} bytes missing)");
            }
            int k = (int)Math.Min(n, Buffered);
            Consume(k);
            n -= k;
        }
    }

    private async ValueTask<byte[]> ReadMetadataAsync(long size, char type, CancellationToken ct)
    {
        if (size > _maxMetadata)
        {
            throw new KaDeployException($"refusing tar stream: a '{type}' metadata entry of {size} bytes (limit {_maxMetadata}) at byte {_consumed}");
        }
        var data = new byte[size];
        int done = 0;
        while (done < size)
        {
            if (Buffered == 0 && !await EnsureAsync(1, ct).ConfigureAwait(false))
            {
                throw Malformed(_consumed, $"archive ends inside a '{type}' metadata entry");
            }
            int k = (int)Math.Min(size - done, Buffered);
            _buf.AsSpan(_pos, k).CopyTo(data.AsSpan(done));
            Consume(k);
            done += k;
        }
        await SkipAsync(Padded(size) - size, ct).ConfigureAwait(false);
        return data;
    }

    /// <summary>
    /// The next at most <paramref name="max"/> bytes of the current entry's data (packed segments for a sparse file),
    /// valid only until the next call on this reader; empty at the entry's end. Lent without a copy when the input
    /// lends its bytes (a node's ring slot); otherwise a piece of this reader's buffer, filled with up to a buffer's
    /// worth of the entry first, so that a large file is written in pieces of the buffer's size.
    /// </summary>
    public async ValueTask<ReadOnlyMemory<byte>> ReadDataSegmentAsync(int max, CancellationToken ct)
    {
        if (_remaining == 0 || max <= 0) return ReadOnlyMemory<byte>.Empty;
        if (Buffered == 0 && _lender is not null && !_eof)
        {
            var segment = await _lender.ReadSegmentAsync(ct).ConfigureAwait(false);
            if (segment.IsEmpty)
            {
                _eof = true;
                throw EntryError($"archive ends inside the entry ({_remaining} bytes missing)");
            }
            int n = (int)Math.Min(Math.Min(segment.Length, _remaining), max);
            if (n < segment.Length)
            {
                // The segment runs past what is asked (the next header, another sparse part): its rest goes to the
                // buffer now, while it is still lent; the next read of any kind starts there.
                var rest = segment.Span[n..];
                if (rest.Length > _buf.Length)
                {
                    ArrayPool<byte>.Shared.Return(_buf);
                    _buf = ArrayPool<byte>.Shared.Rent(rest.Length);
                }
                rest.CopyTo(_buf);
                _pos = 0;
                _len = rest.Length;
            }
            _consumed += n;
            _remaining -= n;
            return segment[..n];
        }
        if (Buffered == 0) await EnsureAsync((int)Math.Min(Math.Min(_remaining, max), _buf.Length), ct).ConfigureAwait(false);
        int k = (int)Math.Min(Math.Min(Buffered, _remaining), max);
        if (k == 0) throw EntryError($"archive ends inside the entry ({_remaining} bytes missing)");
        var piece = _buf.AsMemory(_pos, k);
        Consume(k);
        _remaining -= k;
        return piece;
    }

    // ---- headers ----------------------------------------------------------------------------------------------

    /// <summary>
    /// The next entry, with the rest of the previous one skipped; null at the end-of-archive block (or when the
    /// input ends cleanly at a header boundary, as GNU tar accepts).
    /// </summary>
    public async ValueTask<TarHeader?> NextAsync(CancellationToken ct)
    {
        await SkipAsync(_remaining + _padding, ct).ConfigureAwait(false);
        _remaining = _padding = 0;

        byte[]? longName = null, longLink = null;
        List<(byte[] Key, byte[] Value)>? local = null;
        long start = -1;
        int metadataEntries = 0;
        while (true)
        {
            long offset = _consumed;
            if (!await EnsureAsync(Block, ct).ConfigureAwait(false))
            {
                if (Buffered == 0 && longName == null && longLink == null && local == null) return null;
                throw Malformed(offset, Buffered == 0 ? "archive ends after extension headers, before their entry" : "archive ends inside a header block");
            }
            ReadOnlySpan<byte> h = _buf.AsSpan(_pos, Block);
            if (!h.ContainsAnyExcept((byte)0))
            {
                if (longName != null || longLink != null || local != null) throw Malformed(offset, "end-of-archive block right after extension headers");
                Consume(Block);
                return null;
            }
            if (!ChecksumMatches(h)) throw Malformed(offset, "header checksum does not match (not a tar archive, or corrupt)");
            if (start < 0) start = offset;
            if (++metadataEntries > 64) throw Malformed(offset, "more than 64 extension headers for one entry");

            byte type = h[156];
            string format = FormatOf(h);
            long size = Number(h.Slice(124, 12), "size", offset);
            if (size < 0 || size > TarTreeSink.MaxEntrySize) throw Malformed(offset, $"size {size} is absurd");

            switch (type)
            {
                case (byte)'x' or (byte)'X':
                {
                    Consume(Block);
                    _sawPax = true;
                    byte[] data = await ReadMetadataAsync(size, (char)type, ct).ConfigureAwait(false);
                    local ??= [];
                    ParseRecords(data, local, offset);
                    continue;
                }
                case (byte)'g':
                {
                    Consume(Block);
                    _sawPax = true;
                    byte[] data = await ReadMetadataAsync(size, 'g', ct).ConfigureAwait(false);
                    var records = new List<(byte[], byte[])>();
                    ParseRecords(data, records, offset);
                    foreach ((byte[] k, byte[] v) in records)
                    {
                        _global.RemoveAll(r => r.Key.AsSpan().SequenceEqual(k));
                        if (v.Length > 0) _global.Add((k, v)); // an empty value deletes the global record
                    }
                    continue;
                }
                case (byte)'L':
                    Consume(Block);
                    longName = CString(await ReadMetadataAsync(size, 'L', ct).ConfigureAwait(false));
                    continue;
                case (byte)'K':
                    Consume(Block);
                    longLink = CString(await ReadMetadataAsync(size, 'K', ct).ConfigureAwait(false));
                    continue;
                case (byte)'V':
                    // A GNU volume label names the tape, not a file: GNU tar and bsdtar extract nothing for it.
                    Consume(Block);
                    await SkipAsync(Padded(size), ct).ConfigureAwait(false);
                    longName = longLink = null;
                    local = null;
                    start = -1;
                    continue;
            }

            var e = new TarHeader { TypeFlag = type, Format = _sawPax && format is "ustar" ? "pax" : format, Offset = start };
            DecodeFields(h, e, format, offset);
            if (longName != null) e.Name = longName;
            if (longLink != null) e.LinkName = longLink;
            _current = e.Name;
            e.DataLength = size;

            long sparseRealSize = -1;
            List<(long, long)>? oldSparse = null;
            if (type == (byte)'S')
            {
                if (format is not ("gnu")) throw EntryError($"a sparse 'S' entry in a {format} header (only GNU headers carry its map)");
                oldSparse = [];
                ReadOldSparse(h.Slice(386, 96), oldSparse, offset);
                sparseRealSize = Number(h.Slice(483, 12), "realsize", offset);
                bool extended = h[482] != 0;
                Consume(Block);
                while (extended)
                {
                    long ext = _consumed;
                    if (!await EnsureAsync(Block, ct).ConfigureAwait(false)) throw Malformed(ext, "archive ends inside a sparse extension block");
                    ReadOnlySpan<byte> x = _buf.AsSpan(_pos, Block);
                    ReadOldSparse(x[..504], oldSparse, ext);
                    extended = x[504] != 0;
                    Consume(Block);
                    if (oldSparse.Count > TarTreeSink.MaxSparseSegments) throw EntryError($"sparse map with more than {TarTreeSink.MaxSparseSegments} segments");
                }
            }
            else
            {
                Consume(Block);
            }

            e.Kind = type switch
            {
                (byte)'0' or 0 or (byte)'7' or (byte)'S' => TarEntryKind.Regular,
                (byte)'1' => TarEntryKind.HardLink,
                (byte)'2' => TarEntryKind.Symlink,
                (byte)'3' => TarEntryKind.CharDevice,
                (byte)'4' => TarEntryKind.BlockDevice,
                (byte)'5' or (byte)'D' => TarEntryKind.Directory,
                (byte)'6' => TarEntryKind.Fifo,
                (byte)'M' => throw EntryError("a GNU multi-volume continuation ('M'): the archive starts in the middle of a file"),
                (byte)'N' => throw EntryError("an old GNU long-name entry ('N') asks the extractor to rename files afterwards; not supported"),
                (byte)'A' => throw EntryError("a Solaris ACL entry ('A'); not supported"),
                _ => throw EntryError($"unknown entry type '{Printable(type)}'"),
            };

            PaxOverrides? pax = null;
            if (_global.Count > 0 || local != null)
            {
                pax = new PaxOverrides();
                foreach ((byte[] k, byte[] v) in _global) Apply(e, k, v, pax, offset);
                if (local != null) foreach ((byte[] k, byte[] v) in local) Apply(e, k, v, pax, offset);
                _current = e.Name;
            }
            if (e.DataLength < 0 || e.DataLength > TarTreeSink.MaxEntrySize) throw EntryError($"size {e.DataLength} is absurd");
            long archived = e.DataLength;   // bytes that follow in the archive
            e.RealSize = e.DataLength;

            // Types that carry no data in the archive, whatever their size field says (libarchive's rules).
            bool noData = e.Kind is TarEntryKind.Symlink or TarEntryKind.CharDevice or TarEntryKind.BlockDevice or TarEntryKind.Fifo
                || (e.Kind == TarEntryKind.Directory && type != (byte)'D');
            if (e.Kind == TarEntryKind.Regular && type is (byte)'0' or 0 or (byte)'7' && e.Name.Length > 0 && e.Name[^1] == '/' && pax?.Sparse != true && oldSparse == null)
            {
                // Old tars (v7, some BSD) store a directory as a regular entry named "dir/"; its size is not data.
                e.Kind = TarEntryKind.Directory;
                noData = true;
            }
            if (e.Kind == TarEntryKind.HardLink && !_sawPax) noData = true; // pre-pax writers put the target's size here
            if (noData)
            {
                archived = 0;
                e.DataLength = e.RealSize = 0;
            }
            if (e.Kind == TarEntryKind.HardLink || (e.Kind == TarEntryKind.Directory && type == (byte)'D'))
            {
                e.DataLength = e.RealSize = 0; // a pax hard link's body or a dumpdir listing is skipped, not extracted
            }
            _remaining = archived;
            _padding = Padded(archived) - archived;

            if (oldSparse != null)
            {
                SetSparse(e, oldSparse, sparseRealSize, archived);
            }
            else if (pax?.Sparse == true)
            {
                await ApplyPaxSparseAsync(e, pax, archived, ct).ConfigureAwait(false);
            }
            if (e.Kind is TarEntryKind.HardLink or TarEntryKind.Directory)
            {
                _padding += _remaining;
                _remaining = 0;
            }
            return e;
        }
    }

    private static string Printable(byte b) => b is >= 0x20 and < 0x7f ? ((char)b).ToString() : $"\\x{b:x2}";

    private static long Padded(long size) => (size + Block - 1) / Block * Block;

    private static byte[] CString(byte[] data)
    {
        int nul = Array.IndexOf(data, (byte)0);
        return nul < 0 ? data : data[..nul];
    }

    private static ReadOnlySpan<byte> Field(ReadOnlySpan<byte> f)
    {
        int nul = f.IndexOf((byte)0);
        return nul < 0 ? f : f[..nul];
    }

    // Bytes 148..155 of the 32-byte chunk at 128 (the checksum field), zeroed before summing.
    private static readonly System.Runtime.Intrinsics.Vector256<byte> ChecksumFieldMask = System.Runtime.Intrinsics.Vector256.Create(
        (byte)0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0);

    private static bool ChecksumMatches(ReadOnlySpan<byte> h)
    {
        long recorded;
        try
        {
            recorded = Number(h.Slice(148, 8), "checksum", 0);
        }
        catch (KaDeployException)
        {
            return false;
        }
        // Summed 32 bytes at a time (this ran byte by byte at a tenth of the extractor's CPU on small files); the
        // checksum field itself counts as spaces.
        long unsigned = 8 * ' ', signed = 8 * ' ';
        for (int i = 0; i < Block; i += 32)
        {
            var v = System.Runtime.Intrinsics.Vector256.Create(h.Slice(i, 32));
            if (i == 128) v = System.Runtime.Intrinsics.Vector256.ConditionalSelect(ChecksumFieldMask, default, v);
            (var lo, var hi) = System.Runtime.Intrinsics.Vector256.Widen(v);
            unsigned += System.Runtime.Intrinsics.Vector256.Sum(lo + hi);
            (var slo, var shi) = System.Runtime.Intrinsics.Vector256.Widen(System.Runtime.Intrinsics.Vector256.AsSByte(v));
            signed += System.Runtime.Intrinsics.Vector256.Sum(slo + shi);
        }
        return recorded == unsigned || recorded == signed;
    }

    private static string FormatOf(ReadOnlySpan<byte> h)
    {
        ReadOnlySpan<byte> magic = h.Slice(257, 8);
        if (magic.SequenceEqual("ustar  \0"u8)) return "gnu";
        if (magic[..6].SequenceEqual("ustar\0"u8))
        {
            return h.Slice(508, 4).SequenceEqual("tar\0"u8) ? "star" : "ustar"; // version "00", or "\0\0" (plexus-archiver)
        }
        return "v7";
    }

    /// <summary>
    /// A numeric field: octal with optional leading spaces and trailing space or NUL (a field of only spaces or
    /// starting with NUL is 0; plexus-archiver writes uid/gid of spaces), or GNU base-256 (first byte 0x80 positive, 0xFF negative).
    /// </summary>
    internal static long Number(ReadOnlySpan<byte> f, string what, long offset)
    {
        if ((f[0] & 0x80) != 0)
        {
            bool negative = f[0] == 0xFF;
            if (!negative && f[0] != 0x80) throw Malformed(offset, $"{what} field is neither octal nor base-256");
            long v = negative ? -1 : 0;
            for (int i = 1; i < f.Length; i++)
            {
                if (!negative && v > (long.MaxValue >> 8)) throw Malformed(offset, $"{what} field overflows");
                if (negative && v < (long.MinValue >> 8)) throw Malformed(offset, $"{what} field overflows");
                v = (v << 8) | f[i];
            }
            return v;
        }
        // Leading spaces are skipped; a field that then starts with NUL is empty, i.e. 0, whatever follows (GNU tar's
        // from_header: libarchive's timestamp_overflow archive has "\0\0\0\0016" in its size field, and GNU tar reads 0).
        int p = 0;
        while (p < f.Length && f[p] == ' ') p++;
        if (p == f.Length || f[p] == 0) return 0;
        long r = 0;
        int digits = 0;
        while (p < f.Length && f[p] is >= (byte)'0' and <= (byte)'7')
        {
            r = r * 8 + (f[p] - '0');
            if (++digits > 21) throw Malformed(offset, $"{what} field overflows");
            p++;
        }
        for (; p < f.Length; p++)
        {
            if (f[p] is not ((byte)' ' or 0)) throw Malformed(offset, $"{what} field '{ByteNames.Printable(f)}' is not a number");
        }
        return r;
    }

    private static uint Id(ReadOnlySpan<byte> f, string what, long offset)
    {
        long v = Number(f, what, offset);
        return v is >= 0 and <= uint.MaxValue ? (uint)v : throw Malformed(offset, $"{what} {v} out of range");
    }

    private static void DecodeFields(ReadOnlySpan<byte> h, TarHeader e, string format, long offset)
    {
        ReadOnlySpan<byte> name = Field(h[..100]);
        e.Mode = (uint)(Number(h.Slice(100, 8), "mode", offset) & 0xFFF);
        e.Uid = Id(h.Slice(108, 8), "uid", offset);
        e.Gid = Id(h.Slice(116, 8), "gid", offset);
        e.MtimeSec = Number(h.Slice(136, 12), "mtime", offset);
        e.LinkName = Field(h.Slice(157, 100)).ToArray();
        if (format == "v7")
        {
            e.Name = name.ToArray();
            return;
        }
        e.UserName = Field(h.Slice(265, 32)).ToArray();
        e.GroupName = Field(h.Slice(297, 32)).ToArray();
        byte t = h[156];
        if (t is (byte)'3' or (byte)'4')
        {
            e.DevMajor = Id(h.Slice(329, 8), "devmajor", offset);
            e.DevMinor = Id(h.Slice(337, 8), "devminor", offset);
        }
        ReadOnlySpan<byte> prefix = format switch
        {
            "ustar" => Field(h.Slice(345, 155)),
            "star" => Field(h.Slice(345, 131)),
            _ => default, // GNU keeps atime, ctime and the sparse map there
        };
        if (prefix.IsEmpty)
        {
            e.Name = name.ToArray();
        }
        else
        {
            var full = new byte[prefix.Length + 1 + name.Length];
            prefix.CopyTo(full);
            full[prefix.Length] = (byte)'/';
            name.CopyTo(full.AsSpan(prefix.Length + 1));
            e.Name = full;
        }
    }

    private static void ReadOldSparse(ReadOnlySpan<byte> area, List<(long, long)> map, long offset)
    {
        for (int i = 0; i + 24 <= area.Length; i += 24)
        {
            ReadOnlySpan<byte> off = area.Slice(i, 12), len = area.Slice(i + 12, 12);
            if (!off.ContainsAnyExcept((byte)0) && !len.ContainsAnyExcept((byte)0)) break; // unused slots are zero-filled
            map.Add((Number(off, "sparse offset", offset), Number(len, "sparse length", offset)));
        }
    }

    // ---- pax records ------------------------------------------------------------------------------------------

    /// <summary>"len key=value\n" records; values are bytes and may hold newlines (GNU tar's SCHILY.acl.*).</summary>
    internal static void ParseRecords(ReadOnlySpan<byte> data, List<(byte[] Key, byte[] Value)> into, long offset)
    {
        int at = 0;
        while (at < data.Length)
        {
            ReadOnlySpan<byte> rest = data[at..];
            if (!rest.ContainsAnyExcept((byte)0)) break; // NUL padding some writers leave inside the size
            int sp = rest.IndexOf((byte)' ');
            if (sp <= 0 || sp > 10 || !Utf8Parser.TryParse(rest[..sp], out int len, out int used) || used != sp)
            {
                throw Malformed(offset, $"pax record at {at} has no length");
            }
            if (len <= sp + 1 || len > rest.Length) throw Malformed(offset, $"pax record at {at} claims {len} bytes, {rest.Length} left");
            ReadOnlySpan<byte> rec = rest[(sp + 1)..len];
            if (rec[^1] != '\n') throw Malformed(offset, $"pax record at {at} does not end in a newline");
            rec = rec[..^1];
            int eq = rec.IndexOf((byte)'=');
            if (eq <= 0) throw Malformed(offset, $"pax record at {at} has no keyword");
            into.Add((rec[..eq].ToArray(), rec[(eq + 1)..].ToArray()));
            at += len;
        }
    }

    private sealed class PaxOverrides
    {
        public bool Sparse;
        public int Major = -1, Minor = -1;
        public long RealSize = -1;
        public byte[]? SparseName;
        public List<long> OffsetsAndLengths = [];
        public bool HasMap;
    }

    private void Apply(TarHeader e, byte[] keyBytes, byte[] v, PaxOverrides pax, long offset)
    {
        ReadOnlySpan<byte> key = keyBytes;
        if (key.StartsWith("SCHILY.xattr."u8))
        {
            AddXattr(e, keyBytes.AsSpan(13).ToArray(), v);
            return;
        }
        if (key.StartsWith("LIBARCHIVE.xattr."u8))
        {
            byte[]? name = PercentDecode(key[17..]);
            byte[]? value = Base64Decode(v);
            if (name == null || value == null) throw EntryError($"pax record {ByteNames.Printable(key)} is not valid percent/base64 encoding");
            AddXattr(e, name, value);
            return;
        }
        string k = ByteNames.TryDecode(key) ?? "";
        bool empty = v.Length == 0; // in an 'x' header, an empty value means "use the header field"
        switch (k)
        {
            case "path": if (!empty) e.Name = v; break;
            case "linkpath": if (!empty) e.LinkName = v; break;
            case "size": if (!empty) e.DataLength = Decimal(v, k, offset); break;
            case "uid": if (!empty) e.Uid = checked((uint)Decimal(v, k, offset)); break;
            case "gid": if (!empty) e.Gid = checked((uint)Decimal(v, k, offset)); break;
            case "uname": e.UserName = v; break;
            case "gname": e.GroupName = v; break;
            case "mtime":
                if (!empty)
                {
                    if (!TryParseTime(v, out long s, out uint ns)) throw Malformed(offset, $"pax mtime '{ByteNames.Printable(v)}' is not a time");
                    e.MtimeSec = s;
                    e.MtimeNsec = ns;
                }
                break;
            case "SCHILY.devmajor": if (!empty) e.DevMajor = checked((uint)Decimal(v, k, offset)); break;
            case "SCHILY.devminor": if (!empty) e.DevMinor = checked((uint)Decimal(v, k, offset)); break;
            case "SCHILY.acl.access": e.AclAccess = empty ? null : v; break;
            case "SCHILY.acl.default": e.AclDefault = empty ? null : v; break;
            case "SCHILY.acl.ace": if (!empty) e.Unsupported = "it carries an NFSv4 ACL (SCHILY.acl.ace), which Linux file systems do not store"; break;
            case "RHT.security.selinux": AddXattr(e, "security.selinux"u8.ToArray(), v); break;
            case "GNU.sparse.major": pax.Sparse = true; pax.Major = (int)Decimal(v, k, offset); break;
            case "GNU.sparse.minor": pax.Sparse = true; pax.Minor = (int)Decimal(v, k, offset); break;
            case "GNU.sparse.name": pax.Sparse = true; pax.SparseName = v; break;
            case "GNU.sparse.realsize" or "GNU.sparse.size": pax.Sparse = true; pax.RealSize = Decimal(v, k, offset); break;
            case "GNU.sparse.numblocks": pax.Sparse = true; break;
            case "GNU.sparse.offset" or "GNU.sparse.numbytes":
                // Sparse 0.0: one offset and one numbytes record per segment, repeated in the same header.
                pax.Sparse = true;
                pax.HasMap = true;
                if ((pax.OffsetsAndLengths.Count % 2 == 0) != (k == "GNU.sparse.offset")) throw EntryError("GNU sparse 0.0 records out of order");
                if (pax.OffsetsAndLengths.Count >= 2 * TarTreeSink.MaxSparseSegments) throw EntryError("sparse map too long");
                pax.OffsetsAndLengths.Add(Decimal(v, k, offset));
                break;
            case "GNU.sparse.map":
            {
                // Sparse 0.1: "offset,length,offset,length,..."
                pax.Sparse = true;
                pax.HasMap = true;
                pax.OffsetsAndLengths.Clear();
                foreach (Range r in v.AsSpan().Split((byte)','))
                {
                    if (pax.OffsetsAndLengths.Count >= 2 * TarTreeSink.MaxSparseSegments) throw EntryError("sparse map too long");
                    pax.OffsetsAndLengths.Add(Decimal(v[r], k, offset));
                }
                break;
            }
            case "atime" or "ctime" or "hdrcharset" or "charset" or "comment" or "SCHILY.dev" or "SCHILY.ino" or "SCHILY.nlink"
                or "SCHILY.fflags" or "SCHILY.filetype" or "SCHILY.realsize" or "LIBARCHIVE.creationtime" or "LIBARCHIVE.symlinktype"
                or "SCHILY.archtype" or "SCHILY.volhdr.volno" or "SCHILY.volhdr.blockoff":
                break; // metadata a Linux extraction does not apply (GNU tar ignores them too)
            default:
                if (_unknownWarned.Add(k.Length > 0 ? k : ByteNames.Printable(key)))
                {
                    _warn?.Invoke($"ignoring unknown pax keyword '{ByteNames.Printable(key)}' (GNU tar ignores it too)");
                }
                break;
        }
    }

    private static void AddXattr(TarHeader e, byte[] name, byte[] value)
    {
        // bsdtar writes the same attribute as both SCHILY.xattr and LIBARCHIVE.xattr: keep one, the last.
        e.Xattrs.RemoveAll(x => x.Name.AsSpan().SequenceEqual(name));
        e.Xattrs.Add((name, value));
    }

    private static long Decimal(ReadOnlySpan<byte> v, string what, long offset)
    {
        if (Utf8Parser.TryParse(v, out long n, out int used) && used == v.Length && n >= 0) return n;
        throw Malformed(offset, $"pax {what} '{ByteNames.Printable(v)}' is not a number");
    }

    /// <summary>A pax time: optional '-', seconds, optional '.' and fraction (nanoseconds kept, finer dropped).</summary>
    internal static bool TryParseTime(ReadOnlySpan<byte> s, out long sec, out uint nsec)
    {
        sec = 0;
        nsec = 0;
        bool negative = !s.IsEmpty && s[0] == '-';
        ReadOnlySpan<byte> t = negative ? s[1..] : s;
        int dot = t.IndexOf((byte)'.');
        ReadOnlySpan<byte> whole = dot < 0 ? t : t[..dot];
        if (whole.IsEmpty || !Utf8Parser.TryParse(whole, out long w, out int used) || used != whole.Length || w < 0) return false;
        uint frac = 0;
        if (dot >= 0)
        {
            ReadOnlySpan<byte> f = t[(dot + 1)..];
            foreach (byte c in f) if (c is < (byte)'0' or > (byte)'9') return false;
            for (int i = 0; i < 9; i++) frac = frac * 10 + (uint)(i < f.Length ? f[i] - '0' : 0);
        }
        if (!negative) { sec = w; nsec = frac; }
        else if (frac == 0) { sec = -w; }
        else { sec = -w - 1; nsec = 1_000_000_000 - frac; }
        return true;
    }

    private static byte[]? PercentDecode(ReadOnlySpan<byte> s)
    {
        var o = new List<byte>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] != '%') { o.Add(s[i]); continue; }
            if (i + 2 >= s.Length || !Utf8Parser.TryParse(s.Slice(i + 1, 2), out byte b, out int used, 'X') || used != 2) return null;
            o.Add(b);
            i += 2;
        }
        return o.ToArray();
    }

    /// <summary>Base64 with or without '=' padding (libarchive writes none).</summary>
    internal static byte[]? Base64Decode(ReadOnlySpan<byte> v)
    {
        v = v.Trim((byte)' ');
        int pad = (4 - v.Length % 4) % 4;
        if (pad == 3) return null;
        var padded = new byte[v.Length + pad];
        v.CopyTo(padded);
        padded.AsSpan(v.Length).Fill((byte)'=');
        var output = new byte[padded.Length / 4 * 3];
        return Base64.DecodeFromUtf8(padded, output, out _, out int written) == OperationStatus.Done ? output[..written] : null;
    }

    // ---- sparse -----------------------------------------------------------------------------------------------

    private void SetSparse(TarHeader e, List<(long Offset, long Length)> map, long realSize, long dataBytes)
    {
        if (realSize < 0 || realSize > TarTreeSink.MaxEntrySize) throw EntryError($"sparse real size {realSize} is absurd");
        long end = 0, total = 0;
        var clean = new List<(long, long)>(map.Count);
        foreach ((long off, long len) in map)
        {
            if (off < end || len < 0 || len > realSize || off > realSize - len)
            {
                throw EntryError($"sparse segment {off}+{len} overlaps another or lies beyond realsize {realSize}");
            }
            end = off + len;
            total += len;
            if (len > 0) clean.Add((off, len));
        }
        if (total != dataBytes) throw EntryError($"sparse map describes {total} data bytes but the entry holds {dataBytes}");
        e.Sparse = clean;
        e.RealSize = realSize;
        e.DataLength = dataBytes;
    }

    private async ValueTask ApplyPaxSparseAsync(TarHeader e, PaxOverrides pax, long archived, CancellationToken ct)
    {
        if (pax.SparseName != null) e.Name = pax.SparseName;
        _current = e.Name;
        if (e.Kind != TarEntryKind.Regular) throw EntryError("GNU sparse records on an entry that is not a regular file");
        if (pax.Major == 1 && pax.Minor == 0)
        {
            // Sparse 1.0: the map is decimal text (count, then offset/length pairs, one a line) at the start of the data,
            // padded to a block. Read it a block at a time so exactly the padded map is consumed.
            var numbers = new List<long>();
            long count = -1, mapBytes = 0, value = 0;
            int digits = 0;
            while (count < 0 || numbers.Count < 2 * count)
            {
                if (mapBytes >= TarTreeSink.MaxSparseMapBytes) throw EntryError($"sparse map longer than {TarTreeSink.MaxSparseMapBytes} bytes");
                if (archived - mapBytes < Block || !await EnsureAsync(Block, ct).ConfigureAwait(false)) throw EntryError("archive ends inside the sparse map");
                ReadOnlySpan<byte> blk = _buf.AsSpan(_pos, Block);
                for (int i = 0; i < Block && (count < 0 || numbers.Count < 2 * count); i++)
                {
                    byte b = blk[i];
                    if (b == '\n')
                    {
                        if (digits == 0) throw EntryError("malformed sparse map");
                        if (count < 0)
                        {
                            if (value > TarTreeSink.MaxSparseSegments) throw EntryError($"sparse map with {value} segments");
                            count = value;
                        }
                        else
                        {
                            numbers.Add(value);
                        }
                        value = 0;
                        digits = 0;
                    }
                    else if (b is >= (byte)'0' and <= (byte)'9' && digits < 18)
                    {
                        value = value * 10 + (b - '0');
                        digits++;
                    }
                    else
                    {
                        throw EntryError("malformed sparse map");
                    }
                }
                Consume(Block);
                mapBytes += Block;
            }
            _remaining = archived - mapBytes;
            var map = new List<(long, long)>(numbers.Count / 2);
            for (int i = 0; i < numbers.Count; i += 2) map.Add((numbers[i], numbers[i + 1]));
            SetSparse(e, map, pax.RealSize, archived - mapBytes);
            return;
        }
        if (pax.Major is -1 or 0 && pax.HasMap)
        {
            // Sparse 0.0 and 0.1: the map is in the records, the data is the segments back to back.
            if (pax.OffsetsAndLengths.Count % 2 != 0) throw EntryError("GNU sparse map with an odd number of values");
            var map = new List<(long, long)>(pax.OffsetsAndLengths.Count / 2);
            for (int i = 0; i < pax.OffsetsAndLengths.Count; i += 2) map.Add((pax.OffsetsAndLengths[i], pax.OffsetsAndLengths[i + 1]));
            SetSparse(e, map, pax.RealSize, archived);
            return;
        }
        throw EntryError($"GNU sparse format {pax.Major}.{pax.Minor} without a map is not supported");
    }
}
