using KaDeploy.Tests.TestSupport;
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

    [Fact]
    public async Task PzstdImageStartingWithASkippableFrameIsATarNotARawDisk()
    {
        using var dir = new TempDirectory();
        byte[] tar = MakeTar();
        File.WriteAllBytes(dir.File("a.tar"), tar);
        PayloadTestKit.Run("pzstd", "-q", "-p", "2", dir.File("a.tar"), "-o", dir.File("a.tar.zst"));
        Assert.Equal(0x184D2A50u, BitConverter.ToUInt32(File.ReadAllBytes(dir.File("a.tar.zst")), 0));
        ImageSource image = ImageSource.Open(dir.File("a.tar.zst"));
        Assert.Equal(ImageFormat.TarZstd, image.Format);
        Assert.Equal(tar, await WriteAllAsync(image.Decompressed()));
    }

    [Fact]
    public async Task MultiMemberGzipIsDecompressedWholeAndEveryMemberIsChecked()
    {
        using var dir = new TempDirectory();
        byte[] tar = MakeTar();
        byte[] packed = [.. Gzip(tar[..100_000]), .. Gzip(tar[100_000..])];
        File.WriteAllBytes(dir.File("multi.tgz"), packed);
        ImageSource image = ImageSource.Open(dir.File("multi.tgz"));
        Assert.Equal(ImageFormat.TarGzip, image.Format);
        Assert.Equal(tar, await WriteAllAsync(image));

        // A corrupt first member (its CRC no longer matches) is an error even though the last member is intact.
        byte[] first = Gzip(tar[..100_000]);
        first[^8] ^= 0xFF;
        File.WriteAllBytes(dir.File("bad.tgz"), [.. first, .. Gzip(tar[100_000..])]);
        var e = await Assert.ThrowsAsync<KaDeployException>(() => WriteAllAsync(ImageSource.Open(dir.File("bad.tgz"))));
        Assert.Contains("is corrupt", e.Message);
    }

    [Theory]
    [InlineData("xz", ImageFormat.TarXz)]
    [InlineData("bzip2", ImageFormat.TarBzip2)]
    public async Task XzAndBzip2TarsAreDecompressedByTheSystemTool(string tool, ImageFormat format)
    {
        using var dir = new TempDirectory();
        byte[] tar = MakeTar();
        File.WriteAllBytes(dir.File("a.tar"), tar);
        PayloadTestKit.Run(tool, "-k", dir.File("a.tar"));
        string packed = dir.File(tool == "xz" ? "a.tar.xz" : "a.tar.bz2");
        File.Move(packed, dir.File("image")); // the name says nothing: content decides
        ImageSource image = ImageSource.Open(dir.File("image"));
        Assert.Equal(format, image.Format);
        Assert.Equal(tar, await WriteAllAsync(image));
    }

    [Fact]
    public void JunkIsRefusedUnlessRaw()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("junk.img"), PayloadTestKit.RandomBytes(200_000, seed: 44));
        var e = Assert.Throws<UnrecognizedPayloadException>(() => ImageSource.Open(dir.File("junk.img")));
        Assert.Contains("--raw", e.Message);
        Assert.Equal(dir.File("junk.img"), e.Path);
        Assert.Equal(ImageFormat.RawDisk, ImageSource.Open(dir.File("junk.img"), new ImageSourceOptions { Raw = true }).Format);
    }

    [Theory]
    [InlineData(510, "55AA", "MBR partition table")]
    [InlineData(512, "4546492050415254", "GPT partition table")]
    [InlineData(1080, "53EF", "ext2/3/4 file system")]
    [InlineData(0, "58465342", "XFS file system")]
    [InlineData(0x10040, "5F42485266535F4D", "btrfs file system")]
    [InlineData(4086, "53574150535041434532", "swap area")]
    public void DiskImagesAreRecognisedByTheirSignature(int offset, string hex, string what)
    {
        using var dir = new TempDirectory();
        byte[] disk = PayloadTestKit.RandomBytes(1 << 20, seed: 45);
        disk.AsSpan(500, 12).Clear(); // no accidental 55AA
        Convert.FromHexString(hex).CopyTo(disk, offset);
        File.WriteAllBytes(dir.File("disk"), disk);
        Assert.Equal(what, PayloadSniffer.Identify(dir.File("disk")).What.Replace("disk image (", "").TrimEnd(')'));
        Assert.Equal(ImageFormat.RawDisk, ImageSource.Open(dir.File("disk")).Format);
    }

    [SkippableFact]
    public void ARealExt4ImageIsADisk()
    {
        using var dir = new TempDirectory();
        string img = dir.File("fs.img");
        using (var f = File.Create(img)) f.SetLength(8 << 20);
        Skip.If(TempDirectory.Run("mkfs.ext4", "-q", "-F", img) != 0, "mkfs.ext4 not available");
        Assert.Equal("disk image (ext2/3/4 file system)", PayloadSniffer.Identify(img).What);
    }
}
