using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.IO.Compression;
using KaDeploy.Payloads.Block;
using ZstdSharp;

namespace KaDeploy.Payloads.Image;

/// <summary>What <see cref="ImageSource.Open"/> found in an image file.</summary>
public enum ImageFormat
{
    /// <summary>An uncompressed tar archive.</summary>
    Tar,
    /// <summary>A zstd-compressed tar archive (.tar.zst).</summary>
    TarZstd,
    /// <summary>A gzip-compressed tar archive (.tar.gz).</summary>
    TarGzip,
    /// <summary>Anything else: a raw disk or partition image, sent as a block map.</summary>
    RawDisk,
}

/// <summary>
/// An image file given to the server, recognised by its content rather than its name: a tar archive is streamed
/// as it is; a .tar.zst is streamed as it is too, still compressed (see <see cref="PreCompressedZstd"/>), with
/// <see cref="Decompressed"/> for a consumer that wants the tar; a .tar.gz is decompressed to its tar; anything
/// else is a raw disk image, sent as a block map with its zero blocks left out.
/// </summary>
public sealed class ImageSource : IPayloadSource
{
    private const int BufferSize = 1024 * 1024;
    private const int TarBlock = 512;

    private readonly IPayloadSource? _blockMap;

    private ImageSource(string path, ImageFormat format, long length, IPayloadSource? blockMap)
    {
        Path = path;
        Format = format;
        Length = length;
        _blockMap = blockMap;
    }

    /// <summary>
    /// Opens <paramref name="path"/> and sniffs its first bytes: ustar magic (or a valid tar header checksum) means
    /// tar, 28 B5 2F FD zstd, 1F 8B gzip, anything else a raw disk image. For compressed files the first 512
    /// decompressed bytes must be a tar header, else the image is refused with the reason.
    /// </summary>
    public static ImageSource Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        byte[] head = new byte[TarBlock];
        int headLength;
        long length;
        try
        {
            using FileStream file = OpenFile(path);
            length = file.Length;
            headLength = file.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"cannot read image {path}: {e.Message}", e);
        }
        ReadOnlySpan<byte> start = head.AsSpan(0, headLength);

        if (start.StartsWith((ReadOnlySpan<byte>)[0x28, 0xB5, 0x2F, 0xFD]))
        {
            RequireTarInside(path, "zstd", stream => new DecompressionStream(stream));
            return new ImageSource(path, ImageFormat.TarZstd, length, blockMap: null);
        }
        if (start.StartsWith((ReadOnlySpan<byte>)[0x1F, 0x8B]))
        {
            RequireTarInside(path, "gzip", stream => new GZipStream(stream, CompressionMode.Decompress));
            return new ImageSource(path, ImageFormat.TarGzip, length, blockMap: null);
        }
        if (LooksLikeTarHeader(start))
            return new ImageSource(path, ImageFormat.Tar, length, blockMap: null);
        var blockMap = new BlockDeviceSource(path);
        return new ImageSource(path, ImageFormat.RawDisk, blockMap.Length, blockMap);
    }

    /// <summary>The image file.</summary>
    public string Path { get; }

    /// <summary>What the file holds.</summary>
    public ImageFormat Format { get; }

    /// <summary>Length of the file itself (compressed, for compressed images; the device size for a device).</summary>
    public long Length { get; }

    /// <summary>
    /// True for a .tar.zst: <see cref="WriteToAsync"/> writes the file's bytes as they are, zstd-compressed, so a
    /// server that compresses its stream with zstd anyway can relay them without decompressing and recompressing.
    /// A caller that does not handle pre-compressed data must use <see cref="Decompressed"/> instead.
    /// </summary>
    public bool PreCompressedZstd => Format == ImageFormat.TarZstd;

    /// <summary><see cref="PayloadKind.BlockMap"/> for a raw disk image, else <see cref="PayloadKind.Tar"/>.</summary>
    public PayloadKind Kind => Format == ImageFormat.RawDisk ? PayloadKind.BlockMap : PayloadKind.Tar;

    /// <summary>
    /// Bytes <see cref="WriteToAsync"/> will write: the file's length when streamed as it is, an upper bound for a
    /// block map, unknown (null) for a .tar.gz, whose decompressed size gzip does not reliably record.
    /// </summary>
    public long? EstimatedLength => Format switch
    {
        ImageFormat.RawDisk => _blockMap!.EstimatedLength,
        ImageFormat.TarGzip => null,
        _ => Length,
    };

    /// <inheritdoc />
    public string Description => Format switch
    {
        ImageFormat.Tar => $"tar image {Path}",
        ImageFormat.TarZstd => $"tar.zst image {Path} (sent compressed)",
        ImageFormat.TarGzip => $"tar.gz image {Path}",
        _ => $"raw disk image {Path}",
    };

    /// <summary>
    /// A source that writes the plain payload: for a .tar.zst the decompressed tar (Kind Tar, length unknown);
    /// for every other format this same source, which is already plain.
    /// </summary>
    public IPayloadSource Decompressed() =>
        Format == ImageFormat.TarZstd ? new DecompressingSource(Path, $"tar.zst image {Path}") : this;

    /// <inheritdoc />
    public Task WriteToAsync(Stream output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(output);
        return Format switch
        {
            ImageFormat.RawDisk => _blockMap!.WriteToAsync(output, cancellationToken),
            ImageFormat.TarGzip => new DecompressingSource(Path, Description).WriteToAsync(output, cancellationToken),
            _ => CopyFileAsync(Path, output, cancellationToken),
        };
    }

    private static FileStream OpenFile(string path) =>
        new(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0, FileOptions.SequentialScan);

    private static async Task CopyFileAsync(string path, Stream output, CancellationToken cancellationToken)
    {
        await using FileStream file = OpenFileOrThrow(path);
        await file.CopyToAsync(output, BufferSize, cancellationToken).ConfigureAwait(false);
    }

    private static FileStream OpenFileOrThrow(string path)
    {
        try
        {
            return OpenFile(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"cannot read image {path}: {e.Message}", e);
        }
    }

    private static Stream Decompress(Stream compressed, bool zstd) =>
        zstd ? new DecompressionStream(compressed) : new GZipStream(compressed, CompressionMode.Decompress);

    private static void RequireTarInside(string path, string compression, Func<Stream, Stream> decompress)
    {
        byte[] head = new byte[TarBlock];
        int n;
        try
        {
            using Stream decompressed = decompress(OpenFileOrThrow(path));
            n = decompressed.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or ZstdException or EndOfStreamException)
        {
            throw new KaDeployException($"image {path} looks {compression}-compressed but cannot be decompressed: {e.Message}", e);
        }
        if (n < TarBlock || !LooksLikeTarHeader(head))
            throw new KaDeployException($"image {path} is {compression}-compressed but does not hold a tar archive (only .tar.{(compression == "zstd" ? "zst" : "gz")} is supported)");
    }

    /// <summary>
    /// True when <paramref name="block"/> is a tar header: "ustar" at offset 257 (POSIX and GNU), or, for old v7
    /// archives without it, a checksum field that matches the header's bytes.
    /// </summary>
    internal static bool LooksLikeTarHeader(ReadOnlySpan<byte> block)
    {
        if (block.Length < TarBlock) return false;
        if (block.Slice(257, 5).SequenceEqual("ustar"u8)) return true;

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
        long sum = 0;
        for (int i = 0; i < TarBlock; i++)
            sum += i is >= 148 and < 156 ? ' ' : block[i];
        return sum == recorded;
    }

    /// <summary>
    /// GZipStream reads a truncated file as a shorter one without complaint, so compare what came out with the
    /// CRC-32 and length in the file's last 8 bytes (RFC 1952). Only a single-member file (what gzip, pigz and
    /// tar -z write) can be checked this way; a concatenation of members would fail here.
    /// </summary>
    private static void CheckGzipTrailer(string path, uint crc, long length)
    {
        Span<byte> trailer = stackalloc byte[8];
        using (FileStream file = OpenFileOrThrow(path))
        {
            if (file.Length < 18) throw new KaDeployException($"image {path} is corrupt or truncated: too short for gzip");
            file.Seek(-8, SeekOrigin.End);
            file.ReadExactly(trailer);
        }
        if (BinaryPrimitives.ReadUInt32LittleEndian(trailer) != crc || BinaryPrimitives.ReadUInt32LittleEndian(trailer[4..]) != (uint)length)
            throw new KaDeployException($"image {path} is corrupt or truncated: gzip checksum or length does not match its content");
    }

    /// <summary>Writes the decompressed content of a .tar.zst or .tar.gz file.</summary>
    private sealed class DecompressingSource(string path, string description) : IPayloadSource
    {
        public PayloadKind Kind => PayloadKind.Tar;
        public long? EstimatedLength => null;
        public string Description => description + " (decompressed)";

        public async Task WriteToAsync(Stream output, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(output);
            FileStream file = OpenFileOrThrow(path);
            byte[] head = new byte[4];
            int n = file.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
            file.Position = 0;
            bool zstd = n == 4 && head.AsSpan().SequenceEqual((ReadOnlySpan<byte>)[0x28, 0xB5, 0x2F, 0xFD]);
            await using Stream decompressed = Decompress(file, zstd);
            byte[] buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
            var crc = new Crc32();
            long total = 0;
            try
            {
                int read;
                while (true)
                {
                    try
                    {
                        read = await decompressed.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is InvalidDataException or ZstdException or EndOfStreamException)
                    {
                        throw new KaDeployException($"image {path} is corrupt or truncated: {e.Message}", e);
                    }
                    if (read == 0) break;
                    if (!zstd) crc.Append(buffer.AsSpan(0, read));
                    total += read;
                    await output.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                }
                if (!zstd) CheckGzipTrailer(path, crc.GetCurrentHashAsUInt32(), total);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }
}
