using System.Buffers.Binary;

namespace KaDeploy.Payloads.Image;

/// <summary>How an image file is compressed.</summary>
public enum ImageCompression
{
    /// <summary>Not compressed.</summary>
    None,
    /// <summary>gzip (one member or several concatenated, as pigz and many tools write).</summary>
    Gzip,
    /// <summary>zstd (one frame or several, skippable frames included, as pzstd writes).</summary>
    Zstd,
    /// <summary>xz (decompressed by the system's xz).</summary>
    Xz,
    /// <summary>bzip2 (decompressed by the system's bzip2).</summary>
    Bzip2,
}

/// <summary>What <see cref="PayloadSniffer.Identify"/> found in a file, by content alone.</summary>
/// <param name="Format">Tar (compressed or not) or a raw disk image.</param>
/// <param name="Compression">The compressor whose magic the file starts with.</param>
/// <param name="What">One line for the operator: "tar archive (zstd)", "disk image (GPT partition table)".</param>
public sealed record PayloadIdentity(ImageFormat Format, ImageCompression Compression, string What);

/// <summary>
/// The file is neither an archive nor a recognisable disk image: refused, because sending it raw would write
/// whatever it is over a node's disk. The operator can insist with <see cref="ImageSourceOptions.Raw"/> (--raw).
/// </summary>
public sealed class UnrecognizedPayloadException(string path, string detail)
    : KaDeployException($"{path} is not a tar archive (plain, gzip, zstd, xz or bzip2) and has no partition table or file-system signature ({detail}); refusing to send it as a disk image (give --raw to send it as it is)")
{
    /// <summary>The refused file.</summary>
    public string Path { get; } = path;
}

/// <summary>
/// Recognises a payload file by its content, never its name: compressors by their magic numbers (zstd frames and
/// skippable frames 0x184D2A50-5F, gzip, xz, bzip2) with a tar header inside, tar by its header checksum (so v7
/// archives without "ustar" count), raw disk images by a partition table (MBR 0x55AA, GPT "EFI PART") or a
/// file-system or volume signature at its documented offset (ext2/3/4, XFS, btrfs, FAT, swap, ISO 9660, LUKS,
/// LVM, squashfs). Anything else is junk and is refused.
/// </summary>
public static class PayloadSniffer
{
    /// <summary>Bytes read from the start of the file: enough for the btrfs superblock at 64 KiB.</summary>
    internal const int HeadLength = 68 * 1024;

    /// <summary>
    /// Identifies <paramref name="path"/>. Throws <see cref="UnrecognizedPayloadException"/> for junk,
    /// <see cref="KaDeployException"/> when the file cannot be read or a compressed file does not hold a tar.
    /// </summary>
    public static PayloadIdentity Identify(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        byte[] head = new byte[HeadLength];
        int n;
        try
        {
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
            n = file.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"cannot read image {path}: {e.Message}", e);
        }
        ReadOnlySpan<byte> start = head.AsSpan(0, n);

        ImageCompression compression = CompressionOf(start);
        if (compression != ImageCompression.None)
        {
            byte[] inner = ImageDecompression.ReadHead(path, compression, TarBlock);
            string name = Name(compression);
            if (inner.Length < TarBlock || !LooksLikeTarHeader(inner))
            {
                throw new KaDeployException($"image {path} is {name}-compressed but does not hold a tar archive (only a compressed tar is supported)");
            }
            ImageFormat format = compression switch
            {
                ImageCompression.Zstd => ImageFormat.TarZstd,
                ImageCompression.Gzip => ImageFormat.TarGzip,
                ImageCompression.Xz => ImageFormat.TarXz,
                _ => ImageFormat.TarBzip2,
            };
            return new PayloadIdentity(format, compression, $"tar archive ({name})");
        }
        if (start.Length >= TarBlock && LooksLikeTarHeader(start)) return new PayloadIdentity(ImageFormat.Tar, ImageCompression.None, "tar archive");
        string? disk = DiskSignature(start);
        if (disk != null) return new PayloadIdentity(ImageFormat.RawDisk, ImageCompression.None, $"disk image ({disk})");
        string detail = n == 0 ? "it is empty" : $"starts with {Convert.ToHexString(start[..Math.Min(8, n)])}";
        throw new UnrecognizedPayloadException(path, detail);
    }

    private const int TarBlock = 512;

    internal static string Name(ImageCompression c) => c switch
    {
        ImageCompression.Gzip => "gzip",
        ImageCompression.Zstd => "zstd",
        ImageCompression.Xz => "xz",
        ImageCompression.Bzip2 => "bzip2",
        _ => "none",
    };

    /// <summary>The compressor whose magic <paramref name="s"/> starts with.</summary>
    public static ImageCompression CompressionOf(ReadOnlySpan<byte> s)
    {
        if (s.Length >= 4)
        {
            uint magic = BinaryPrimitives.ReadUInt32LittleEndian(s);
            if (magic == 0xFD2FB528) return ImageCompression.Zstd;
            if ((magic & 0xFFFFFFF0) == 0x184D2A50) return ImageCompression.Zstd; // skippable frame (pzstd starts with one)
        }
        if (s.Length >= 3 && s[0] == 0x1F && s[1] == 0x8B && s[2] == 8) return ImageCompression.Gzip;
        if (s.StartsWith((ReadOnlySpan<byte>)[0xFD, (byte)'7', (byte)'z', (byte)'X', (byte)'Z', 0])) return ImageCompression.Xz;
        if (s.Length >= 10 && s.StartsWith("BZh"u8) && s[3] is >= (byte)'1' and <= (byte)'9' && s.Slice(4, 6).SequenceEqual((ReadOnlySpan<byte>)[0x31, 0x41, 0x59, 0x26, 0x53, 0x59]))
        {
            return ImageCompression.Bzip2;
        }
        return ImageCompression.None;
    }

    /// <summary>What marks <paramref name="s"/> (the first <see cref="HeadLength"/> bytes) as a disk or file-system image, or null.</summary>
    public static string? DiskSignature(ReadOnlySpan<byte> s)
    {
        if (At(s, 512, "EFI PART"u8)) return "GPT partition table";
        if (At(s, 4096, "EFI PART"u8)) return "GPT partition table, 4 KiB sectors";
        if (At(s, 0, "XFSB"u8)) return "XFS file system";
        if (At(s, 0x10040, "_BHRfS_M"u8)) return "btrfs file system";
        if (At(s, 1080, [0x53, 0xEF])) return "ext2/3/4 file system";
        if (At(s, 4086, "SWAPSPACE2"u8) || At(s, 4086, "SWAP-SPACE"u8)) return "swap area";
        if (At(s, 0, [(byte)'L', (byte)'U', (byte)'K', (byte)'S', 0xBA, 0xBE])) return "LUKS volume";
        if (At(s, 512, "LABELONE"u8) || At(s, 1024, "LABELONE"u8)) return "LVM physical volume";
        if (At(s, 0, "hsqs"u8)) return "squashfs file system";
        if (At(s, 0x8001, "CD001"u8)) return "ISO 9660 file system";
        if (At(s, 510, [0x55, 0xAA]))
        {
            if (At(s, 54, "FAT1"u8) || At(s, 82, "FAT32"u8)) return "FAT file system";
            if (At(s, 3, "NTFS    "u8)) return "NTFS file system";
            if (At(s, 3, "EXFAT   "u8)) return "exFAT file system";
            return "MBR partition table";
        }
        return null;
    }

    private static bool At(ReadOnlySpan<byte> s, int offset, ReadOnlySpan<byte> magic) =>
        s.Length >= offset + magic.Length && s.Slice(offset, magic.Length).SequenceEqual(magic);

    /// <summary>
    /// True when <paramref name="block"/> is a tar header: its checksum field matches its bytes (unsigned or signed
    /// sum, as tar readers accept). "ustar" alone is not enough: a header must check out.
    /// </summary>
    public static bool LooksLikeTarHeader(ReadOnlySpan<byte> block)
    {
        if (block.Length < TarBlock) return false;
        if (!block[..TarBlock].ContainsAnyExcept((byte)0)) return false;
        ReadOnlySpan<byte> field = block.Slice(148, 8);
        long recorded = 0;
        int digits = 0;
        foreach (byte b in field)
        {
            if (b is (byte)' ' or 0)
            {
                if (digits > 0) break;
                continue;
            }
            if (b is < (byte)'0' or > (byte)'7') return false;
            recorded = recorded * 8 + (b - '0');
            digits++;
        }
        if (digits == 0) return false;
        long sum = 0, signed = 0;
        for (int i = 0; i < TarBlock; i++)
        {
            byte b = i is >= 148 and < 156 ? (byte)' ' : block[i];
            sum += b;
            signed += (sbyte)b;
        }
        return sum == recorded || signed == recorded;
    }
}
