using System.Formats.Tar;
using System.IO.Compression;
using KaDeploy.Payloads;
using KaDeploy.Payloads.Block;
using KaDeploy.Payloads.Image;
using KaDeploy.Tests.Payloads.Block;
using ZstdSharp;

namespace KaDeploy.Tests.Payloads.Image;

public class ImageSourceTests
{
    private static byte[] MakeTar(TarEntryFormat format = TarEntryFormat.Pax)
    {
        var tar = new MemoryStream();
        using (var writer = new TarWriter(tar, format, leaveOpen: true))
        {
            var entry = format == TarEntryFormat.V7
                ? (TarEntry)new V7TarEntry(TarEntryType.V7RegularFile, "etc/hostname")
                : new PaxTarEntry(TarEntryType.RegularFile, "etc/hostname");
            entry.DataStream = new MemoryStream(PayloadTestKit.RandomBytes(300_000, seed: 41));
            writer.WriteEntry(entry);
        }
        return tar.ToArray();
    }

    private static byte[] Gzip(byte[] data)
    {
        var output = new MemoryStream();
        using (var gzip = new GZipStream(output, CompressionLevel.Fastest, leaveOpen: true)) gzip.Write(data);
        return output.ToArray();
    }

    private static byte[] Zstd(byte[] data) => new Compressor(3).Wrap(data).ToArray();

    private static async Task<byte[]> WriteAllAsync(IPayloadSource source)
    {
        using var cts = PayloadTestKit.SafetyTimeout(30);
        var output = new MemoryStream();
        await source.WriteToAsync(output, cts.Token);
        return output.ToArray();
    }

    [Fact]
    public async Task TarIsStreamedAsItIs()
    {
        using var dir = new TempDirectory();
        byte[] tar = MakeTar();
        File.WriteAllBytes(dir.File("root.tar"), tar);
        ImageSource image = ImageSource.Open(dir.File("root.tar"));
        Assert.Equal(ImageFormat.Tar, image.Format);
        Assert.Equal(PayloadKind.Tar, image.Kind);
        Assert.False(image.PreCompressedZstd);
        Assert.Equal(tar.Length, image.EstimatedLength);
        Assert.Equal(tar, await WriteAllAsync(image));
        Assert.Same(image, image.Decompressed());
    }

    [Fact]
    public void OldV7TarIsRecognisedByItsChecksum()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("old.tar"), MakeTar(TarEntryFormat.V7));
        Assert.Equal(ImageFormat.Tar, ImageSource.Open(dir.File("old.tar")).Format);
    }

    [Fact]
    public async Task TarZstdIsStreamedCompressedAndOffersTheTar()
    {
        using var dir = new TempDirectory();
        byte[] tar = MakeTar();
        byte[] zst = Zstd(tar);
        File.WriteAllBytes(dir.File("root.tar.zst"), zst);
        ImageSource image = ImageSource.Open(dir.File("root.tar.zst"));
        Assert.Equal(ImageFormat.TarZstd, image.Format);
        Assert.Equal(PayloadKind.Tar, image.Kind);
        Assert.True(image.PreCompressedZstd);
        Assert.Equal(zst, await WriteAllAsync(image));

        IPayloadSource plain = image.Decompressed();
        Assert.Equal(PayloadKind.Tar, plain.Kind);
        Assert.Null(plain.EstimatedLength);
        Assert.Equal(tar, await WriteAllAsync(plain));
    }

    [Fact]
    public async Task TarGzipIsDecompressed()
    {
        using var dir = new TempDirectory();
        byte[] tar = MakeTar();
        File.WriteAllBytes(dir.File("root.tgz"), Gzip(tar));
        ImageSource image = ImageSource.Open(dir.File("root.tgz"));
        Assert.Equal(ImageFormat.TarGzip, image.Format);
        Assert.Equal(PayloadKind.Tar, image.Kind);
        Assert.False(image.PreCompressedZstd);
        Assert.Equal(tar, await WriteAllAsync(image));
    }

    [Fact]
    public async Task AnythingElseIsARawDiskSentAsABlockMap()
    {
        using var dir = new TempDirectory();
        byte[] disk = new byte[3 * 1024 * 1024];
        PayloadTestKit.RandomBytes(70_000, seed: 42).CopyTo(disk, 1024 * 1024);
        disk[510] = 0x55; // an MBR signature, for the look of it
        disk[511] = 0xAA;
        File.WriteAllBytes(dir.File("disk.img"), disk);
        ImageSource image = ImageSource.Open(dir.File("disk.img"));
        Assert.Equal(ImageFormat.RawDisk, image.Format);
        Assert.Equal(PayloadKind.BlockMap, image.Kind);

        byte[] encoded = await WriteAllAsync(image);
        Assert.True(encoded.Length < 300_000);
        await new BlockDeviceSink(dir.File("copy.img")).ConsumeAsync(new MemoryStream(encoded), CancellationToken.None);
        Assert.Equal(disk, File.ReadAllBytes(dir.File("copy.img")));
    }

    [Theory]
    [InlineData("zstd")]
    [InlineData("gzip")]
    public void CompressedNonTarIsRefused(string compression)
    {
        using var dir = new TempDirectory();
        byte[] notTar = PayloadTestKit.RandomBytes(100_000, seed: 43);
        File.WriteAllBytes(dir.File("disk.img.x"), compression == "zstd" ? Zstd(notTar) : Gzip(notTar));
        var e = Assert.Throws<KaDeployException>(() => ImageSource.Open(dir.File("disk.img.x")));
        Assert.Contains($"is {compression}-compressed but does not hold a tar archive", e.Message);
    }

    [Fact]
    public void CompressedFileWithABrokenHeaderIsRefused()
    {
        using var dir = new TempDirectory();
        byte[] zst = Zstd(MakeTar());
        zst.AsSpan(4, 40).Fill(0xFF); // frame header and first block header: nothing decodes
        File.WriteAllBytes(dir.File("bad.tar.zst"), zst);
        var e = Assert.Throws<KaDeployException>(() => ImageSource.Open(dir.File("bad.tar.zst")));
        Assert.Contains("bad.tar.zst", e.Message);
    }

    [Theory]
    [InlineData("zstd")]
    [InlineData("gzip")]
    public async Task TruncatedCompressedImageFailsWhileStreaming(string compression)
    {
        using var dir = new TempDirectory();
        byte[] tar = MakeTar();
        byte[] packed = compression == "zstd" ? Zstd(tar) : Gzip(tar);
        File.WriteAllBytes(dir.File("cut"), packed.AsSpan(0, packed.Length * 2 / 3).ToArray());
        ImageSource image = ImageSource.Open(dir.File("cut"));
        var e = await Assert.ThrowsAsync<KaDeployException>(() => WriteAllAsync(image.Decompressed()));
        Assert.Contains("is corrupt", e.Message);
    }

    [Fact]
    public void MissingImageIsReported()
    {
        var e = Assert.Throws<KaDeployException>(() => ImageSource.Open("/nonexistent/root.tar"));
        Assert.Contains("/nonexistent/root.tar", e.Message);
    }
}
