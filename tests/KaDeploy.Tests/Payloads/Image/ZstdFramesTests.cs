using KaDeploy.Cli;
using KaDeploy.Payloads;
using KaDeploy.Payloads.Image;
using KaDeploy.Payloads.Tar;
using KaDeploy.Protocol;
using KaDeploy.Tests.Payloads.Block;
using KaDeploy.Tests.Session;
using KaDeploy.Tests.TestSupport;
using ZstdSharp;

namespace KaDeploy.Tests.Payloads.Image;

/// <summary>
/// A .tar.zst's length read from its zstd frame headers, without decompressing it (RFC 8878): the sum of what every
/// frame declares, or no answer at all when a frame declares nothing or the file is not whole. Under the frames
/// digest the server sends a pre-compressed image with that length in its End frame and decompresses nothing.
/// </summary>
public sealed class ZstdFramesTests
{
    private static byte[] Content(int length)
    {
        var bytes = new byte[length];
        new Random(length).NextBytes(bytes.AsSpan(0, length / 2)); // half random, half zeros: raw, RLE and compressed blocks
        return bytes;
    }

    // Content sizes at the edges of the field's four widths: 1 byte (single segment, < 256), 2 bytes (256 .. 65791,
    // stored minus 256), 4 bytes, and a multi-block frame.
    [Theory]
    [InlineData(1)]
    [InlineData(255)]
    [InlineData(256)]
    [InlineData(300)]
    [InlineData(65791)]
    [InlineData(65792)]
    [InlineData(3_000_000)]
    public void AFileCompressedFromAFileDeclaresItsLength(int length)
    {
        using var dir = new TempDirectory("kad-zstf");
        string plain = dir.Sub("plain"), packed = dir.Sub("plain.zst"), wrapped = dir.Sub("wrapped.zst");
        File.WriteAllBytes(plain, Content(length));
        PayloadTestKit.Run("zstd", "-q", "-3", plain, "-o", packed);
        Assert.Equal(length, ZstdFrames.DeclaredContentSize(packed));
        using (var compressor = new Compressor(3)) File.WriteAllBytes(wrapped, compressor.Wrap(Content(length)).ToArray());
        Assert.Equal(length, ZstdFrames.DeclaredContentSize(wrapped));
    }

    [Fact]
    public void AStreamCompressedFromAPipeDeclaresNothing()
    {
        using var dir = new TempDirectory("kad-zstf");
        string plain = dir.Sub("plain"), piped = dir.Sub("piped.zst");
        File.WriteAllBytes(plain, Content(200_000));
        PayloadTestKit.Run("sh", "-c", $"zstd -q -c < '{plain}' > '{piped}'");
        Assert.Null(ZstdFrames.DeclaredContentSize(piped));
    }

    [Fact]
    public void FramesOneAfterAnotherAreSummedAndSkippableFramesCountNothing()
    {
        using var dir = new TempDirectory("kad-zstf");
        string a = dir.Sub("a"), b = dir.Sub("b"), joined = dir.Sub("joined.zst"), back = dir.Sub("back");
        File.WriteAllBytes(a, Content(100_000));
        File.WriteAllBytes(b, Content(777));
        PayloadTestKit.Run("zstd", "-q", a, "-o", a + ".zst");
        PayloadTestKit.Run("zstd", "-q", b, "-o", b + ".zst");
        byte[] skippable = [0x5A, 0x2A, 0x4D, 0x18, 5, 0, 0, 0, 1, 2, 3, 4, 5]; // magic 0x184D2A5A, 5 bytes of user data
        File.WriteAllBytes(joined, [.. File.ReadAllBytes(a + ".zst"), .. skippable, .. File.ReadAllBytes(b + ".zst")]);
        Assert.Equal(100_777, ZstdFrames.DeclaredContentSize(joined));
        PayloadTestKit.Run("zstd", "-q", "-d", joined, "-o", back); // the decoder agrees
        Assert.Equal(100_777, new FileInfo(back).Length);
    }

    [Fact]
    public void AFileCutShortPaddedOrWithAReservedBitHasNoAnswer()
    {
        using var dir = new TempDirectory("kad-zstf");
        string plain = dir.Sub("plain"), packed = dir.Sub("plain.zst"), bad = dir.Sub("bad.zst");
        File.WriteAllBytes(plain, Content(300_000));
        PayloadTestKit.Run("zstd", "-q", plain, "-o", packed);
        byte[] whole = File.ReadAllBytes(packed);
        Assert.Equal(300_000, ZstdFrames.DeclaredContentSize(packed));

        File.WriteAllBytes(bad, whole[..^1]);
        Assert.Null(ZstdFrames.DeclaredContentSize(bad));
        File.WriteAllBytes(bad, [.. whole, 0]);
        Assert.Null(ZstdFrames.DeclaredContentSize(bad));
        byte[] reserved = [.. whole];
        reserved[4] |= 0x08;
        File.WriteAllBytes(bad, reserved);
        Assert.Null(ZstdFrames.DeclaredContentSize(bad));
        File.WriteAllBytes(bad, []);
        Assert.Null(ZstdFrames.DeclaredContentSize(bad));
    }

    private static Func<int, Func<Plan, IPayloadSink>> TreeSinks(TempDirectory dir) =>
        i => PayloadSelection.ClientSinks(dir.Sub($"node{i}"), null, null, force: false, assumeZeroed: false, TextWriter.Null);

    [Fact]
    public async Task APreCompressedImageGoesOutUndecompressedWithTheDeclaredLengthAndEveryNodeVerifies()
    {
        using var dir = new TempDirectory("kad-zstf");
        string src = dir.Sub("src"), tar = dir.Sub("image.tar");
        SampleTree.Create(src);
        await using (var f = File.Create(tar)) await new TarTreeSource(new TarTreeSourceOptions { Root = src }).WriteToAsync(f, default);
        PayloadTestKit.Run("zstd", "-q", "-3", tar, "-o", tar + ".zst");
        var source = ImageSource.Open(tar + ".zst");
        var log = new LockedStringWriter();

        var (report, results) = await LoopbackSession.RunAsync(source, 3, 1, TreeSinks(dir), WireCompression.Zstd, sourceIsZstd: true, log: log);

        Assert.True(report.Success, report.Message + "\n" + report.FormatTable());
        Assert.All(results, r => Assert.True(r.Verified, r.Message));
        Assert.Contains("(as its zstd frames declare)", log.ToString());
        Assert.Equal(new FileInfo(tar).Length, report.PayloadBytes);
        Assert.Equal(new FileInfo(tar + ".zst").Length, report.WireBytes);
        for (int i = 0; i < 3; i++) Assert.Empty(TreeComparer.Compare(src, dir.Sub($"node{i}")));
    }

    [Fact]
    public async Task AnImageWhoseFramesDeclareMoreThanTheyHoldFailsEveryNode()
    {
        using var dir = new TempDirectory("kad-zstf");
        string src = dir.Sub("src"), tar = dir.Sub("image.tar"), lying = dir.Sub("lying.tar.zst");
        SampleTree.Create(src);
        await using (var f = File.Create(tar)) await new TarTreeSource(new TarTreeSourceOptions { Root = src }).WriteToAsync(f, default);
        PayloadTestKit.Run("zstd", "-q", "-3", tar, "-o", tar + ".zst");
        // One more frame by hand: single segment, a 1-byte content size of 10, one raw last block of 5 bytes.
        byte[] liar = [0x28, 0xB5, 0x2F, 0xFD, 0x20, 10, 0x29, 0, 0, (byte)'h', (byte)'e', (byte)'l', (byte)'l', (byte)'o'];
        File.WriteAllBytes(lying, [.. File.ReadAllBytes(tar + ".zst"), .. liar]);
        Assert.Equal(new FileInfo(tar).Length + 10, ZstdFrames.DeclaredContentSize(lying));
        var source = ImageSource.Open(lying);

        var (report, results) = await LoopbackSession.RunAsync(source, 3, 1, TreeSinks(dir), WireCompression.Zstd, sourceIsZstd: true);

        Assert.False(report.Success);
        Assert.All(results, r => Assert.False(r.Verified, "a node verified a copy of an image that declares more than it holds"));
    }
}
