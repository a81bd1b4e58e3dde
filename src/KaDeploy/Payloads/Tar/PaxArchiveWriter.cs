using System.Buffers;
using System.Buffers.Text;
using System.Text;

namespace KaDeploy.Payloads.Tar;

/// <summary>
/// Writes POSIX pax archives into one pooled output buffer that is flushed to the stream when full.
/// System.Formats.Tar.TarWriter is not used for writing because it rewrites the pax "mtime" record from a
/// DateTimeOffset (100 ns ticks, so nanoseconds are lost), silently truncates uid/gid above 07777777, and
/// allocates a dictionary, a MemoryStream and a header name per entry. Archives written here are read back
/// with TarReader and with GNU tar in tests.
/// </summary>
internal sealed class PaxArchiveWriter : IDisposable
{
    internal const int Block = 512;
    private const long MaxOctal7 = 0x1FFFFF;       // 07777777
    private const long MaxOctal11 = 0x1FFFFFFFF;   // 077777777777

    private readonly Stream _output;
    private readonly KaDeploy.IO.ISegmentWriter? _lender;
    private byte[] _buffer;
    private int _used;
    private byte[] _paxBytes = new byte[4096];
    private int _paxLength;
    private bool _binary;

    public long BytesWritten { get; private set; }

    public PaxArchiveWriter(Stream output, int bufferSize)
    {
        _output = output;
        _lender = output is KaDeploy.IO.ISegmentWriter { LendsSegments: true } lender ? lender : null;
        _buffer = ArrayPool<byte>.Shared.Rent(bufferSize);
    }

    /// <summary>
    /// True when the output lends the memory its next bytes go to (the server's ring slot, through the digest):
    /// file data can then be read straight into it, without a copy through this writer's buffer.
    /// </summary>
    public bool Lends => _lender is not null;

    /// <summary>The output's memory for the next bytes (never empty), once everything buffered has gone ahead of them; fill a prefix, then <see cref="AdvanceLent"/>.</summary>
    public async ValueTask<Memory<byte>> LendAsync(CancellationToken ct)
    {
        await FlushAsync(ct).ConfigureAwait(false);
        return await _lender!.GetSegmentAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Commits the first <paramref name="count"/> bytes of the memory last lent by <see cref="LendAsync"/>.</summary>
    public void AdvanceLent(int count)
    {
        _lender!.Advance(count);
        BytesWritten += count;
    }

    public void Dispose()
    {
        byte[] b = _buffer;
        _buffer = [];
        if (b.Length > 0) ArrayPool<byte>.Shared.Return(b);
    }

    /// <summary>Free space at the end of the buffer, for callers that read file data straight into it.</summary>
    public Memory<byte> Free => _buffer.AsMemory(_used);

    public void Advance(int count) { _used += count; BytesWritten += count; }

    public async ValueTask EnsureFreeAsync(int count, CancellationToken ct)
    {
        if (_buffer.Length - _used < count) await FlushAsync(ct).ConfigureAwait(false);
    }

    public async ValueTask FlushAsync(CancellationToken ct)
    {
        if (_used > 0)
        {
            await _output.WriteAsync(_buffer.AsMemory(0, _used), ct).ConfigureAwait(false);
            _used = 0;
        }
    }

    /// <summary>Appends <paramref name="count"/> zero bytes (padding, or data that vanished under us).</summary>
    public async ValueTask WriteZerosAsync(long count, CancellationToken ct)
    {
        while (count > 0)
        {
            if (_used == _buffer.Length) await FlushAsync(ct).ConfigureAwait(false);
            int n = (int)Math.Min(count, _buffer.Length - _used);
            _buffer.AsSpan(_used, n).Clear();
            Advance(n);
            count -= n;
        }
    }

    public async ValueTask WriteBytesAsync(ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        while (!data.IsEmpty)
        {
            if (_used == _buffer.Length) await FlushAsync(ct).ConfigureAwait(false);
            int n = Math.Min(data.Length, _buffer.Length - _used);
            data.Span[..n].CopyTo(_buffer.AsSpan(_used));
            Advance(n);
            data = data[n..];
        }
    }

    public ValueTask PadAsync(long dataLength, CancellationToken ct)
    {
        int pad = (int)((Block - dataLength % Block) % Block);
        return pad == 0 ? ValueTask.CompletedTask : WriteZerosAsync(pad, ct);
    }

    /// <summary>Two zero blocks end the archive; then everything is flushed.</summary>
    public async ValueTask FinishAsync(CancellationToken ct)
    {
        await WriteZerosAsync(2 * Block, ct).ConfigureAwait(false);
        await FlushAsync(ct).ConfigureAwait(false);
        await _output.FlushAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Starts collecting pax records for the next header.</summary>
    public void BeginRecords()
    {
        _paxLength = 0;
        _binary = false;
    }

    /// <summary>Adds one "len key=value\n" record of text.</summary>
    public void AddRecord(string key, string value) => AddRecord(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(value));

    /// <summary>
    /// Adds one "len key=value\n" record. Values are bytes: a pax record is length-prefixed, so any byte (a newline,
    /// a byte that is not UTF-8) is carried as it is.
    /// </summary>
    public void AddRecord(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        int len = RecordLength(key.Length, value.Length);
        if (_paxBytes.Length < _paxLength + len) Array.Resize(ref _paxBytes, Math.Max(_paxLength + len, _paxBytes.Length * 2));
        Span<byte> rec = _paxBytes.AsSpan(_paxLength, len);
        int at = Encoding.ASCII.GetBytes(len.ToString(System.Globalization.CultureInfo.InvariantCulture), rec);
        rec[at++] = (byte)' ';
        key.CopyTo(rec[at..]);
        at += key.Length;
        rec[at++] = (byte)'=';
        value.CopyTo(rec[at..]);
        at += value.Length;
        rec[at] = (byte)'\n';
        _paxLength += len;
    }

    // A path, linkpath, uname or gname that is not UTF-8 needs "hdrcharset=BINARY" (POSIX pax), so that readers
    // take the bytes as they are instead of converting them from UTF-8 (GNU tar and bsdtar both honour it).
    internal void AddNameRecord(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value)
    {
        if (!_binary && !System.Text.Unicode.Utf8.IsValid(value))
        {
            _binary = true;
            AddRecord("hdrcharset"u8, "BINARY"u8);
        }
        AddRecord(key, value);
    }

    /// <summary>Bytes of one "len key=value\n" record (the length counts its own digits).</summary>
    internal static int RecordLength(int keyLength, int valueLength)
    {
        int body = 3 + keyLength + valueLength;
        int len = body + Digits(body);
        return Digits(len) != Digits(body) ? body + Digits(len) : len;
    }

    /// <summary>
    /// Bytes <see cref="WriteHeaderAsync(byte[], char, uint, uint, uint, long, long, uint, byte[], uint, uint, CancellationToken, byte[], byte[])"/>
    /// emits for an entry (pax header block, records and padding when needed, then the ustar block), given the
    /// bytes of the records added before it: the size estimate computes the stream with the writer's own rules.
    /// </summary>
    internal static long HeaderBytes(ReadOnlySpan<byte> name, ReadOnlySpan<byte> linkName, bool hasLink, long mtimeSec, uint mtimeNsec,
        uint uid, uint gid, long size, long recordBytes)
    {
        long pax = recordBytes;
        bool binary = false;
        if (!FitsUstar(name, 100)) pax += NameRecordLength(4, name, ref binary);
        if (hasLink && !FitsUstar(linkName, 100)) pax += NameRecordLength(8, linkName, ref binary);
        if (mtimeNsec != 0 || mtimeSec < 0 || mtimeSec > MaxOctal11) pax += RecordLength(5, TimeLength(mtimeSec, mtimeNsec));
        if (uid > MaxOctal7) pax += RecordLength(3, DecimalLength(uid));
        if (gid > MaxOctal7) pax += RecordLength(3, DecimalLength(gid));
        if (size > MaxOctal11) pax += RecordLength(4, DecimalLength(size));
        return Block + (pax > 0 ? Block + (pax + Block - 1) / Block * Block : 0);
    }

    private static int NameRecordLength(int keyLength, ReadOnlySpan<byte> value, ref bool binary)
    {
        int n = 0;
        if (!binary && !System.Text.Unicode.Utf8.IsValid(value))
        {
            binary = true;
            n = RecordLength("hdrcharset".Length, "BINARY".Length);
        }
        return n + RecordLength(keyLength, value.Length);
    }

    private static int DecimalLength(long v) => v < 0 ? 1 + DecimalLength((ulong)(-(v + 1)) + 1) : DecimalLength((ulong)v);

    private static int DecimalLength(ulong v) => v < 10 ? 1 : 1 + DecimalLength(v / 10);

    // Length of FormatTime's text, without making it.
    private static int TimeLength(long sec, uint nsec) =>
        nsec == 0 ? DecimalLength(sec) : sec < 0 ? 1 + DecimalLength(-(sec + 1)) + 10 : DecimalLength(sec) + 10;

    private static int Digits(int v) => v < 10 ? 1 : v < 100 ? 2 : v < 1000 ? 3 : v < 10000 ? 4 : v < 100000 ? 5 : v < 1000000 ? 6 : v < 10000000 ? 7 : v < 100000000 ? 8 : 9;

    /// <summary>Text-name convenience over the byte form (tests and callers whose names are known text).</summary>
    public ValueTask WriteHeaderAsync(
        string name, char typeFlag, uint mode, uint uid, uint gid, long size, long mtimeSec, uint mtimeNsec,
        string? linkName, uint devMajor, uint devMinor, CancellationToken ct) =>
        WriteHeaderAsync(Encoding.UTF8.GetBytes(name), typeFlag, mode, uid, gid, size, mtimeSec, mtimeNsec,
            linkName == null ? null : Encoding.UTF8.GetBytes(linkName), devMajor, devMinor, ct);

    /// <summary>
    /// Writes the pax extended header (when needed) and the ustar header of one entry. Adds path, linkpath,
    /// mtime (with nanoseconds), uid, gid and size records itself when the ustar fields cannot hold them.
    /// Names are bytes and reach the archive unchanged.
    /// </summary>
    public async ValueTask WriteHeaderAsync(
        byte[] name, char typeFlag, uint mode, uint uid, uint gid, long size, long mtimeSec, uint mtimeNsec,
        byte[]? linkName, uint devMajor, uint devMinor, CancellationToken ct, byte[]? userName = null, byte[]? groupName = null)
    {
        if (!FitsUstar(name, 100)) AddNameRecord("path"u8, name);
        if (linkName != null && !FitsUstar(linkName, 100)) AddNameRecord("linkpath"u8, linkName);
        if (userName != null && !FitsUstar(userName, 32)) AddNameRecord("uname"u8, userName);
        if (groupName != null && !FitsUstar(groupName, 32)) AddNameRecord("gname"u8, groupName);
        if (mtimeNsec != 0 || mtimeSec < 0 || mtimeSec > MaxOctal11)
        {
            AddRecord("mtime", FormatTime(mtimeSec, mtimeNsec));
        }
        if (uid > MaxOctal7) AddRecord("uid", uid.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (gid > MaxOctal7) AddRecord("gid", gid.ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (size > MaxOctal11) AddRecord("size", size.ToString(System.Globalization.CultureInfo.InvariantCulture));

        if (_paxLength > 0)
        {
            int n = _paxLength;
            await EnsureFreeAsync(Block, ct).ConfigureAwait(false);
            FillHeader(_buffer.AsSpan(_used, Block), "PaxHeader"u8, 'x', 0x1A4, 0, 0, n, Math.Clamp(mtimeSec, 0, MaxOctal11), null, 0, 0, null, null);
            Advance(Block);
            await WriteBytesAsync(_paxBytes.AsMemory(0, n), ct).ConfigureAwait(false);
            await PadAsync(n, ct).ConfigureAwait(false);
            _paxLength = 0;
            _binary = false;
        }

        await EnsureFreeAsync(Block, ct).ConfigureAwait(false);
        FillHeader(_buffer.AsSpan(_used, Block), name, typeFlag, mode, Math.Min(uid, MaxOctal7), Math.Min(gid, MaxOctal7),
            Math.Min(size, MaxOctal11), Math.Clamp(mtimeSec, 0, MaxOctal11), linkName, devMajor, devMinor, userName, groupName);
        Advance(Block);
    }

    internal static string FormatTime(long sec, uint nsec)
    {
        if (nsec == 0) return sec.ToString(System.Globalization.CultureInfo.InvariantCulture);
        // Negative times: sec is floor, nsec positive; pax wants a signed decimal.
        if (sec < 0)
        {
            long s = sec + 1;
            uint ns = 1_000_000_000 - nsec;
            return $"-{(-s).ToString(System.Globalization.CultureInfo.InvariantCulture)}.{ns:D9}";
        }
        return $"{sec.ToString(System.Globalization.CultureInfo.InvariantCulture)}.{nsec:D9}";
    }

    private static bool FitsUstar(ReadOnlySpan<byte> s, int max) =>
        s.Length <= max && !s.ContainsAnyInRange((byte)0x80, (byte)0xFF); // keep ustar fields ASCII; other names go in pax records

    private static void FillHeader(
        Span<byte> h, ReadOnlySpan<byte> name, char typeFlag, long mode, long uid, long gid, long size, long mtime,
        ReadOnlySpan<byte> linkName, uint devMajor, uint devMinor, byte[]? userName, byte[]? groupName)
    {
        h.Clear();
        PutAscii(h.Slice(0, 100), name);
        PutOctal(h.Slice(100, 8), mode);
        PutOctal(h.Slice(108, 8), uid);
        PutOctal(h.Slice(116, 8), gid);
        PutOctal(h.Slice(124, 12), size);
        PutOctal(h.Slice(136, 12), mtime);
        h[156] = (byte)typeFlag;
        PutAscii(h.Slice(157, 100), linkName);
        "ustar\0"u8.CopyTo(h.Slice(257));
        "00"u8.CopyTo(h.Slice(263));
        if (userName != null) PutAscii(h.Slice(265, 32), userName);
        if (groupName != null) PutAscii(h.Slice(297, 32), groupName);
        if (typeFlag is '3' or '4')
        {
            PutOctal(h.Slice(329, 8), devMajor);
            PutOctal(h.Slice(337, 8), devMinor);
        }
        h.Slice(148, 8).Fill((byte)' ');
        PutOctal(h.Slice(148, 7), ByteSum(h));
        h[155] = (byte)' ';
    }

    // The unsigned sum of a header block, 32 bytes at a time (byte by byte it was a tenth of the sender's CPU on small files).
    internal static int ByteSum(ReadOnlySpan<byte> block)
    {
        int sum = 0;
        for (int i = 0; i < Block; i += 32)
        {
            (var lo, var hi) = System.Runtime.Intrinsics.Vector256.Widen(System.Runtime.Intrinsics.Vector256.Create(block.Slice(i, 32)));
            sum += System.Runtime.Intrinsics.Vector256.Sum(lo + hi);
        }
        return sum;
    }

    // Truncated copy (the pax record carries the full name); bytes >= 0x80 become '_' so the field stays ASCII.
    private static void PutAscii(Span<byte> field, ReadOnlySpan<byte> s)
    {
        int n = Math.Min(field.Length, s.Length);
        for (int i = 0; i < n; i++) field[i] = s[i] < 0x80 ? s[i] : (byte)'_';
    }

    // Zero-padded octal with a trailing NUL, as GNU tar writes it.
    private static void PutOctal(Span<byte> field, long value)
    {
        int i = field.Length - 2;
        field[^1] = 0;
        for (; i >= 0; i--)
        {
            field[i] = (byte)('0' + (value & 7));
            value >>= 3;
        }
    }

    /// <summary>Percent-encodes an xattr name the way libarchive does for LIBARCHIVE.xattr.* keys.</summary>
    internal static string EncodeXattrName(byte[] name)
    {
        var sb = new StringBuilder(name.Length);
        foreach (byte b in name)
        {
            if (b > 0x20 && b < 0x7f && b != '%' && b != '=') sb.Append((char)b);
            else sb.Append('%').Append(b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    /// <summary>Percent-encodes an xattr name given as text.</summary>
    internal static string EncodeXattrName(string name)
    {
        var sb = new StringBuilder(name.Length);
        Span<byte> utf8 = stackalloc byte[4];
        foreach (Rune r in name.EnumerateRunes())
        {
            if (r.Value > 0x20 && r.Value < 0x7f && r.Value != '%' && r.Value != '=')
            {
                sb.Append((char)r.Value);
                continue;
            }
            int n = r.EncodeToUtf8(utf8);
            for (int i = 0; i < n; i++) sb.Append('%').Append(utf8[i].ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    internal static string DecodeXattrName(string encoded)
    {
        if (!encoded.Contains('%')) return encoded;
        var bytes = new List<byte>(encoded.Length);
        for (int i = 0; i < encoded.Length; i++)
        {
            if (encoded[i] == '%' && i + 2 < encoded.Length &&
                byte.TryParse(encoded.AsSpan(i + 1, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
            {
                bytes.Add(b);
                i += 2;
            }
            else
            {
                bytes.AddRange(Encoding.UTF8.GetBytes(encoded[i].ToString()));
            }
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    internal static string EncodeBase64(byte[] value) => Convert.ToBase64String(value);

    /// <summary>Accepts base64 with or without '=' padding (libarchive writes none).</summary>
    internal static byte[]? DecodeBase64(string value)
    {
        string v = value.Trim();
        int rem = v.Length % 4;
        if (rem == 2) v += "==";
        else if (rem == 3) v += "=";
        else if (rem == 1) return null;
        byte[] buf = new byte[Base64.GetMaxDecodedFromUtf8Length(v.Length)];
        return Convert.TryFromBase64String(v, buf, out int n) ? buf[..n] : null;
    }
}
