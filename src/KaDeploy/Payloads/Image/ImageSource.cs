using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using System.IO.Compression;
using KaDeploy.Payloads.Block;
using ZstdSharp;

namespace KaDeploy.Payloads.Image;

/// <summary>What <see cref="ImageSource.Open(string, ImageSourceOptions?)"/> found in an image file.</summary>
public enum ImageFormat
{
    /// <summary>An uncompressed tar archive.</summary>
    Tar,
    /// <summary>A zstd-compressed tar archive (.tar.zst), one frame or many.</summary>
    TarZstd,
    /// <summary>A gzip-compressed tar archive (.tar.gz), one member or many.</summary>
    TarGzip,
    /// <summary>A raw disk or partition image, sent as a block map.</summary>
    RawDisk,
    /// <summary>An xz-compressed tar archive (.tar.xz).</summary>
    TarXz,
    /// <summary>A bzip2-compressed tar archive (.tar.bz2).</summary>
    TarBzip2,
}

/// <summary>Settings for <see cref="ImageSource.Open(string, ImageSourceOptions?)"/>.</summary>
public sealed record ImageSourceOptions
{
    /// <summary>
    /// Send the file as a raw disk image whatever its content (--raw). Without it, a file that is neither an
    /// archive nor has a partition table or file-system signature is refused.
    /// </summary>
    public bool Raw { get; init; }
}

/// <summary>
/// An image file given to the server, recognised by its content rather than its name (<see cref="PayloadSniffer"/>):
/// a tar archive is streamed as it is; a .tar.zst is streamed as it is too, still compressed (see
/// <see cref="PreCompressedZstd"/>), with <see cref="Decompressed"/> for a consumer that wants the tar; gzip, xz and
/// bzip2 tars are decompressed to their tar; a disk image (partition table or file-system signature, or anything
/// with <see cref="ImageSourceOptions.Raw"/>, or a block device) is sent as a block map with its zero blocks left
/// out; anything else is refused.
/// </summary>
public sealed class ImageSource : IPayloadSource
{
    private const int BufferSize = 1024 * 1024;

    private readonly BlockDeviceSource? _blockMap;
    private readonly ImageCompression _compression;

    private ImageSource(string path, ImageFormat format, ImageCompression compression, long length, BlockDeviceSource? blockMap, string what)
    {
        Path = path;
        Format = format;
        _compression = compression;
        Length = length;
        _blockMap = blockMap;
        What = what;
    }

    /// <summary>Opens <paramref name="path"/> with default options (junk refused).</summary>
    public static ImageSource Open(string path) => Open(path, null);

    /// <summary>
    /// Opens <paramref name="path"/> and identifies it by content. Throws <see cref="UnrecognizedPayloadException"/>
    /// for a file that is neither an archive nor a disk image (unless <see cref="ImageSourceOptions.Raw"/>), and
    /// <see cref="KaDeployException"/> for an unreadable file or a compressed file that holds no tar.
    /// </summary>
    public static ImageSource Open(string path, ImageSourceOptions? options)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= new ImageSourceOptions();
        PayloadIdentity id;
        if (options.Raw)
        {
            id = new PayloadIdentity(ImageFormat.RawDisk, ImageCompression.None, "raw image (--raw)");
        }
        else
        {
            try
            {
                id = PayloadSniffer.Identify(path);
            }
            catch (UnrecognizedPayloadException) when (IsBlockDevice(path))
            {
                id = new PayloadIdentity(ImageFormat.RawDisk, ImageCompression.None, "block device");
            }
        }
        if (id.Format == ImageFormat.RawDisk)
        {
            var blockMap = new BlockDeviceSource(path);
            return new ImageSource(path, ImageFormat.RawDisk, ImageCompression.None, blockMap.Length, blockMap, id.What);
        }
        long length;
        try
        {
            length = new FileInfo(path).Length;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"cannot read image {path}: {e.Message}", e);
        }
        return new ImageSource(path, id.Format, id.Compression, length, blockMap: null, id.What);
    }

    private static bool IsBlockDevice(string path) =>
        Platform.Posix.TryLStat(path, out Platform.FileStatus st, out _) && st.Kind == Platform.FileKind.BlockDevice
        || (File.ResolveLinkTarget(path, returnFinalTarget: true)?.FullName is string t
            && Platform.Posix.TryLStat(t, out Platform.FileStatus ts, out _) && ts.Kind == Platform.FileKind.BlockDevice);

    /// <summary>What the file was recognised as, in words ("tar archive (zstd)", "disk image (GPT partition table)").</summary>
    public string What { get; }

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

    /// <summary>
    /// For a .tar.zst, the tar's length as its zstd frames declare it (<see cref="ZstdFrames"/>), read from the
    /// headers without decompressing; null when a frame does not declare it, and for any other format.
    /// </summary>
    public long? DeclaredContentLength() => PreCompressedZstd ? ZstdFrames.DeclaredContentSize(Path) : null;

    /// <summary>
    /// How the stream <see cref="WriteToAsync"/> writes is made of the file, for a spool that reads it again instead of
    /// keeping it (<see cref="Relay.StreamSpool.FromSource"/>): the file as it is (a tar), or a block map of it (a raw
    /// image, file or device); null when the stream is decompressed from the file, or sent compressed.
    /// </summary>
    public Relay.SourceLayout? RereadLayout => Format switch
    {
        ImageFormat.Tar => Relay.SourceLayout.Plain,
        ImageFormat.RawDisk => Relay.SourceLayout.BlockMap,
        _ => null,
    };

    /// <summary><see cref="PayloadKind.BlockMap"/> for a raw disk image, else <see cref="PayloadKind.Tar"/>.</summary>
    public PayloadKind Kind => Format == ImageFormat.RawDisk ? PayloadKind.BlockMap : PayloadKind.Tar;

    /// <summary>
    /// Bytes <see cref="WriteToAsync"/> will write: the file's length when streamed as it is, an upper bound for a
    /// block map, unknown (null) for a gzip, xz or bzip2 tar, whose decompressed size is not reliably recorded.
    /// </summary>
    public long? EstimatedLength => Format switch
    {
        ImageFormat.RawDisk => _blockMap!.EstimatedLength,
        ImageFormat.Tar or ImageFormat.TarZstd => Length,
        _ => null,
    };

    /// <inheritdoc />
    public string Description => Format switch
    {
        ImageFormat.Tar => $"tar image {Path}",
        ImageFormat.TarZstd => $"tar.zst image {Path} (sent compressed)",
        ImageFormat.RawDisk => $"{What} {Path}",
        _ => $"tar.{Suffix} image {Path}",
    };

    private string Suffix => _compression switch
    {
        ImageCompression.Gzip => "gz",
        ImageCompression.Xz => "xz",
        ImageCompression.Bzip2 => "bz2",
        _ => "zst",
    };

    /// <summary>
    /// A source that writes the plain payload: for a .tar.zst the decompressed tar (Kind Tar, length unknown);
    /// for every other format this same source, which is already plain.
    /// </summary>
    public IPayloadSource Decompressed() =>
        Format == ImageFormat.TarZstd ? new DecompressingSource(Path, ImageCompression.Zstd, $"tar.zst image {Path}") : this;

    /// <inheritdoc />
    public Task WriteToAsync(Stream output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(output);
        return Format switch
        {
            // A raw image in a regular file goes straight into the ring slot when the output lends it (no compression).
            ImageFormat.RawDisk when output is KaDeploy.IO.ISegmentWriter { LendsSegments: true } lender && !_blockMap!.IsBlockDevice =>
                RawImageIntoSlots.WriteAsync(Path, _blockMap.Length, _blockMap.BlockSize, output, lender, cancellationToken),
            ImageFormat.RawDisk => _blockMap!.WriteToAsync(output, cancellationToken),
            ImageFormat.Tar or ImageFormat.TarZstd => CopyFileAsync(Path, output, cancellationToken),
            _ => new DecompressingSource(Path, _compression, Description).WriteToAsync(output, cancellationToken),
        };
    }

    private static FileStream OpenFile(string path) =>
        new(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0, FileOptions.SequentialScan);

    private static async Task CopyFileAsync(string path, Stream output, CancellationToken cancellationToken)
    {
        await using FileStream file = OpenFileOrThrow(path);
        if (output is KaDeploy.IO.ISegmentWriter { LendsSegments: true } lender)
        {
            // Straight into the ring slot the output lends (one read per frame's payload): no buffer, no copy of ours.
            while (true)
            {
                Memory<byte> segment = await lender.GetSegmentAsync(cancellationToken).ConfigureAwait(false);
                int n = ReadInto(file, path, segment.Span);
                if (n == 0) return;
                lender.Advance(n);
            }
        }
        await file.CopyToAsync(output, BufferSize, cancellationToken).ConfigureAwait(false);
    }

    private static int ReadInto(FileStream file, string path, Span<byte> into)
    {
        try
        {
            return file.Read(into);
        }
        catch (IOException e)
        {
            throw new KaDeployException($"cannot read image {path}: {e.Message}", e);
        }
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

    /// <summary>True when <paramref name="block"/> is a tar header (see <see cref="PayloadSniffer.LooksLikeTarHeader"/>).</summary>
    internal static bool LooksLikeTarHeader(ReadOnlySpan<byte> block) => PayloadSniffer.LooksLikeTarHeader(block);

    /// <summary>Writes the decompressed content of a compressed tar file.</summary>
    private sealed class DecompressingSource(string path, ImageCompression compression, string description) : IPayloadSource
    {
        public PayloadKind Kind => PayloadKind.Tar;
        public long? EstimatedLength => null;
        public string Description => description + " (decompressed)";

        public async Task WriteToAsync(Stream output, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(output);
            await using Stream decompressed = ImageDecompression.Open(path, compression);
            byte[] buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
            try
            {
                while (true)
                {
                    int read;
                    try
                    {
                        read = await decompressed.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is InvalidDataException or ZstdException or EndOfStreamException)
                    {
                        throw new KaDeployException($"image {path} is corrupt or truncated: {e.Message}", e);
                    }
                    if (read == 0) break;
                    await output.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }
}
