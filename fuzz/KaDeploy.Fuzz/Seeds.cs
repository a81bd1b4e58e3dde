using System.Buffers;
using System.Buffers.Binary;
using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using KaDeploy.Payloads;
using KaDeploy.Payloads.Block;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Security;

namespace KaDeploy.Fuzz;

/// <summary>Valid inputs for each target, so the fuzzer starts inside the formats rather than at their magic numbers.</summary>
public static class Seeds
{
    /// <summary>Writes <c>DIR/TARGET/seed-N</c> for every target.</summary>
    public static void Write(string directory)
    {
        foreach (var (name, inputs) in All())
        {
            var dir = Path.Combine(directory, name);
            Directory.CreateDirectory(dir);
            int i = 0;
            foreach (var input in inputs) File.WriteAllBytes(Path.Combine(dir, $"seed-{i++}"), input);
        }
    }

    /// <summary>Target name → valid inputs.</summary>
    public static IEnumerable<(string Name, List<byte[]> Inputs)> All()
    {
        yield return ("dataframe", [Prefixed(0, Stream(null, 3000)), Prefixed(1, Stream(new StreamCipher(Key32(1), 7), 3000)), Prefixed(0, Stream(null, 0))]);
        yield return ("control", Control());
        yield return ("discovery", [Discovery("default"), Discovery("lab-ü")]);
        yield return ("blockmap", [BlockMap()]);
        yield return ("tar", [Tar()]);
        var tar = Tar();
        yield return ("image", [tar, Gzip(tar), Zstd(tar), new byte[2048]]);
        yield return ("handshake", Handshakes());
        yield return ("layout", [
            "table gpt\nbios_grub 1\nefi 256 /boot/efi\nlinux 512 /boot label=boot\nswap 2G\nlinux fill / fs=xfs label=root options=noatime\n"u8.ToArray(),
            "table = \"gpt\"\n[[partition]]\ntype = \"efi\"\nsize = \"256M\"\nmount = \"/boot/efi\"\n[[partition]]\ntype = \"linux\"\nsize = \"fill\"\nmount = \"/\"\nfs = \"ext4\"\n"u8.ToArray(),
        ]);
    }

    internal static byte[] Key32(int start) => Enumerable.Range(start, 32).Select(i => (byte)i).ToArray();

    private static byte[] Prefixed(byte first, byte[] rest) => [first, .. rest];

    /// <summary>A whole data-link stream of <paramref name="length"/> payload bytes, as the server's producer cuts it.</summary>
    public static byte[] Stream(StreamCipher? cipher, int length)
    {
        using var ring = new RelayRing(8 * RelayRing.SlotSize, sealedFrames: cipher is not null);
        var cursor = ring.Attach("seed");
        var writer = new RingWriterStream(ring, CancellationToken.None, cipher);
        var payload = new byte[length];
        new Random(length).NextBytes(payload);
        writer.Write(payload);
        writer.CompleteAsync(length, DigestAlgorithm.Sha256, SHA256.HashData(payload), CancellationToken.None).GetAwaiter().GetResult();
        var output = new MemoryStream();
        while (true)
        {
            var frame = cursor.Next(CancellationToken.None);
            output.Write(frame.Bytes.Span);
            cursor.Advance();
            if (frame.Header.Type == DataFrameType.End) break;
        }
        cipher?.Dispose();
        return output.ToArray();
    }

    private static List<byte[]> Control()
    {
        ControlMessage[] messages =
        [
            new Hello(ProtocolConstants.Version, HelloRole.Client, "default", "node-1", "198.18.0.2", 30764),
            new Welcome(1, 1, 4),
            new Plan(1, 0, "198.18.0.1", 30764, [2, 3], PayloadKind.Tar, WireCompression.None, 123456, new byte[16]),
            new Progress(10, 20),
            new Done(true, 10, 20, 30, "verified"),
            new ChildLost(2, "gone"),
            new DataHello(ProtocolConstants.Version, new byte[16], 2, 65536),
            new Refuse("no"),
        ];
        var clear = new ArrayBufferWriter<byte>();
        foreach (var m in messages) ControlCodec.Encode(m, clear);
        var list = new List<byte[]> { Prefixed(0, clear.WrittenSpan.ToArray()) };
        foreach (var m in messages)
        {
            var one = new ArrayBufferWriter<byte>();
            ControlCodec.Encode(m, one);
            list.Add(one.WrittenSpan[4..].ToArray()); // the codec's own input: a body without its length
        }
        // A sealed sequence, as the harness's receiving side would read it (opener's direction).
        using var key = PresharedKey.FromBytes(Key32(100));
        var nonce = new byte[Handshake.NonceSize];
        using var opener = ControlCipher.Derive(key, nonce, nonce, isOpener: true);
        var sealedFrames = new MemoryStream();
        foreach (var m in messages)
        {
            var one = new ArrayBufferWriter<byte>();
            ControlCodec.Encode(m, one);
            var frame = new byte[one.WrittenCount + ControlCipher.TagSize];
            one.WrittenSpan.CopyTo(frame);
            opener.Seal(frame);
            sealedFrames.Write(frame);
        }
        list.Add(Prefixed(1, sealedFrames.ToArray()));
        return list;
    }

    private static byte[] Discovery(string session)
    {
        var name = System.Text.Encoding.UTF8.GetBytes(session);
        var r = new byte[12 + name.Length];
        ProtocolConstants.Magic.CopyTo(r);
        BinaryPrimitives.WriteUInt16LittleEndian(r.AsSpan(8), ProtocolConstants.Version);
        BinaryPrimitives.WriteUInt16LittleEndian(r.AsSpan(10), (ushort)name.Length);
        name.CopyTo(r, 12);
        return r;
    }

    private static byte[] BlockMap()
    {
        var ms = new MemoryStream();
        var w = new BlockMapWriter(ms, 4196, 512);
        w.WriteHeaderAsync(CancellationToken.None).AsTask().GetAwaiter().GetResult();
        w.WriteRunAsync(512, new byte[1024].Select((_, i) => (byte)i).ToArray(), CancellationToken.None).AsTask().GetAwaiter().GetResult();
        w.WriteRunAsync(4096, new byte[100].Select((_, i) => (byte)(i + 1)).ToArray(), CancellationToken.None).AsTask().GetAwaiter().GetResult();
        w.WriteEndAsync(CancellationToken.None).AsTask().GetAwaiter().GetResult();
        return ms.ToArray();
    }

    private static byte[] Tar()
    {
        var ms = new MemoryStream();
        using (var w = new TarWriter(ms, TarEntryFormat.Pax, leaveOpen: true))
        {
            w.WriteEntry(new PaxTarEntry(TarEntryType.Directory, "d") { Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute });
            w.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, "d/f") { DataStream = new MemoryStream("hello\n"u8.ToArray()) });
            w.WriteEntry(new PaxTarEntry(TarEntryType.SymbolicLink, "d/l") { LinkName = "f" });
            w.WriteEntry(new PaxTarEntry(TarEntryType.HardLink, "d/h") { LinkName = "d/f" });
        }
        return ms.ToArray();
    }

    private static byte[] Gzip(byte[] data)
    {
        var ms = new MemoryStream();
        using (var gz = new GZipStream(ms, CompressionLevel.Fastest, leaveOpen: true)) gz.Write(data);
        return ms.ToArray();
    }

    private static byte[] Zstd(byte[] data)
    {
        using var c = new ZstdSharp.Compressor(1);
        return c.Wrap(data).ToArray();
    }

    private static List<byte[]> Handshakes()
    {
        // Acceptor role (byte 0 bit 1): the opener's hello, unkeyed and keyed, then a keyed final message.
        var list = new List<byte[]>();
        foreach (bool keyed in new[] { false, true })
        {
            var session = "s"u8;
            var hello = new byte[8 + 2 + 1 + 1 + Handshake.NonceSize + 2 + session.Length];
            ProtocolConstants.Magic.CopyTo(hello);
            BinaryPrimitives.WriteUInt16LittleEndian(hello.AsSpan(8), ProtocolConstants.Version);
            hello[10] = 1;
            hello[11] = keyed ? (byte)1 : (byte)0;
            BinaryPrimitives.WriteUInt16LittleEndian(hello.AsSpan(12 + Handshake.NonceSize), (ushort)session.Length);
            session.CopyTo(hello.AsSpan(hello.Length - session.Length));
            byte[] tail = keyed ? new byte[1 + 32] : [];
            list.Add([(byte)(2 | (keyed ? 1 : 0)), .. hello, .. tail]);
            // Opener role: the acceptor's reply.
            var reply = new byte[8 + 2 + 1 + 1 + Handshake.NonceSize + (keyed ? 32 : 0)];
            ProtocolConstants.Magic.CopyTo(reply);
            BinaryPrimitives.WriteUInt16LittleEndian(reply.AsSpan(8), ProtocolConstants.Version);
            reply[11] = keyed ? (byte)1 : (byte)0;
            list.Add([(byte)(keyed ? 1 : 0), .. reply]);
        }
        return list;
    }
}
