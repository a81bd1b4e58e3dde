using System.Text;

namespace KaDeploy.Tests.Payloads.Tar;

/// <summary>
/// Writes tar archives header field by header field, so a test can reproduce exactly what an old or odd writer
/// put on disk (v7 directories with a size, ustar version "\0\0", uid fields of spaces, base-256 numbers...).
/// </summary>
internal sealed class RawTar
{
    private readonly MemoryStream _ms = new();

    public static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    /// <summary>Appends one header block. Numeric fields are given as their raw text (octal, spaces, ...).</summary>
    public RawTar Header(
        byte[] name, char type, long size = 0, string mode = "0000644", string uid = "0000000", string gid = "0000000",
        string mtime = "14000000000", byte[]? link = null, string format = "ustar", Action<byte[]>? tweak = null)
    {
        var h = new byte[512];
        name.AsSpan(0, Math.Min(100, name.Length)).CopyTo(h);
        Put(h, 100, 8, mode);
        Put(h, 108, 8, uid);
        Put(h, 116, 8, gid);
        Put(h, 124, 12, Convert.ToString(size, 8).PadLeft(11, '0'));
        Put(h, 136, 12, mtime);
        h[156] = (byte)type;
        link?.AsSpan(0, Math.Min(100, link.Length)).CopyTo(h.AsSpan(157));
        switch (format)
        {
            case "ustar": Put(h, 257, 8, "ustar\u000000"); break;
            case "gnu": Put(h, 257, 8, "ustar  \0"); break;
            case "plexus": Put(h, 257, 8, "ustar\0\0\0"); break;
            case "v7": break;
        }
        tweak?.Invoke(h);
        h.AsSpan(148, 8).Fill((byte)' ');
        int sum = 0;
        foreach (byte b in h) sum += b;
        Put(h, 148, 8, Convert.ToString(sum, 8).PadLeft(6, '0') + "\0 ");
        _ms.Write(h);
        return this;
    }

    private static void Put(byte[] h, int at, int len, string text)
    {
        byte[] b = Encoding.Latin1.GetBytes(text);
        b.AsSpan(0, Math.Min(len, b.Length)).CopyTo(h.AsSpan(at));
    }

    /// <summary>Appends data, padded to a block.</summary>
    public RawTar Data(byte[] data)
    {
        _ms.Write(data);
        int pad = (512 - data.Length % 512) % 512;
        _ms.Write(new byte[pad]);
        return this;
    }

    /// <summary>Appends a pax 'x' (or 'g') header with the given records; values are bytes.</summary>
    public RawTar Pax(char type, params (string Key, byte[] Value)[] records)
    {
        var body = new MemoryStream();
        foreach ((string key, byte[] value) in records)
        {
            int inner = 3 + Encoding.UTF8.GetByteCount(key) + value.Length;
            int len = inner + inner.ToString().Length;
            if (len.ToString().Length != inner.ToString().Length) len = inner + len.ToString().Length;
            body.Write(B($"{len} {key}="));
            body.Write(value);
            body.WriteByte((byte)'\n');
        }
        byte[] data = body.ToArray();
        return Header(B("PaxHeader"), type, data.Length).Data(data);
    }

    /// <summary>Two zero blocks, and the archive.</summary>
    public byte[] End()
    {
        _ms.Write(new byte[1024]);
        return _ms.ToArray();
    }
}
