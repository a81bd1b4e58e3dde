using System.Security.Cryptography;
using KaDeploy.Cli;
using KaDeploy.Payloads;
using KaDeploy.Payloads.Block;
using KaDeploy.Payloads.Exec;
using KaDeploy.Payloads.Image;
using KaDeploy.Payloads.Tar;
using KaDeploy.Protocol;
using KaDeploy.Tests.Payloads.Block;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Session;

/// <summary>
/// Every payload mode through a real server and real clients on loopback (real sockets, real tar,
/// real files and loop devices), with the client sinks chosen by the CLI's own selection code, and
/// every target compared to the source entry by entry or byte by byte.
/// </summary>
public class PayloadModeTests
{
    private static Func<int, Func<Plan, IPayloadSink>> Sinks(Func<int, string?> target, Func<int, string?>? device = null, Func<int, string?>? exec = null) =>
        i => PayloadSelection.ClientSinks(target(i), device?.Invoke(i), exec?.Invoke(i), force: false, assumeZeroed: false, TextWriter.Null);

    private static void AssertIdentical(string source, string target)
    {
        var diffs = TreeComparer.Compare(source, target);
        Assert.True(diffs.Count == 0, $"{target} differs from {source}:\n" + string.Join("\n", diffs.Take(30)));
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(1, true)]
    [InlineData(3, false)]
    [InlineData(3, true)]
    public async Task FileTreeArrivesIdenticalOnEveryNode(int arity, bool zstd)
    {
        using var dir = new TempDirectory("kad-tree");
        string src = dir.Sub("src");
        SampleTree.Create(src);
        const int clients = 5;
        var (report, results) = await LoopbackSession.RunAsync(new TarTreeSource(new TarTreeSourceOptions { Root = src }), clients, arity,
            Sinks(i => dir.Sub($"node{i}")), zstd ? WireCompression.Zstd : WireCompression.None);
        Assert.True(report.Success, report.Message + "\n" + report.FormatTable());
        Assert.All(results, r => Assert.True(r.Verified, r.Message));
        for (int i = 0; i < clients; i++) AssertIdentical(src, dir.Sub($"node{i}"));
        if (zstd) Assert.True(report.WireBytes < report.PayloadBytes, "zstd did not shrink the tar of a tree with holes and text");
        else Assert.Equal(report.PayloadBytes, report.WireBytes);
    }

    [Theory]
    [InlineData(".tar", 1, false)]
    [InlineData(".tar", 3, true)]
    [InlineData(".tar.zst", 1, true)]
    [InlineData(".tar.zst", 3, true)]
    [InlineData(".tar.gz", 1, true)]
    [InlineData(".tar.gz", 3, false)]
    public async Task ArchiveImagesAreExtractedOnEveryNode(string extension, int arity, bool zstd)
    {
        using var dir = new TempDirectory("kad-img");
        string src = dir.Sub("src");
        SampleTree.Create(src);
        string tar = dir.Sub("image.tar");
        await using (var f = File.Create(tar)) await new TarTreeSource(new TarTreeSourceOptions { Root = src }).WriteToAsync(f, default);
        string image = tar;
        if (extension == ".tar.zst") { PayloadTestKit.Run("zstd", "-q", "-3", tar, "-o", tar + ".zst"); image = tar + ".zst"; }
        if (extension == ".tar.gz") { PayloadTestKit.Run("gzip", "-k", tar); image = tar + ".gz"; }
        var source = ImageSource.Open(image);
        var (report, results) = await LoopbackSession.RunAsync(source, 4, arity, Sinks(i => dir.Sub($"node{i}")),
            zstd || source.PreCompressedZstd ? WireCompression.Zstd : WireCompression.None, sourceIsZstd: source.PreCompressedZstd);
        Assert.True(report.Success, report.Message + "\n" + report.FormatTable());
        for (int i = 0; i < 4; i++) AssertIdentical(src, dir.Sub($"node{i}"));
        Assert.Equal(new FileInfo(tar).Length, report.PayloadBytes); // the digest covers the plain tar, whatever the wire carried
        if (source.PreCompressedZstd) Assert.Equal(new FileInfo(image).Length, report.WireBytes);
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(1, true)]
    [InlineData(3, false)]
    [InlineData(3, true)]
    public async Task RawDiskImageArrivesSparseAndExact(int arity, bool zstd)
    {
        using var dir = new TempDirectory("kad-raw");
        string image = dir.Sub("disk.img");
        var rng = new Random(5);
        await using (var f = File.Create(image))
        {
            var block = new byte[1 << 20];
            foreach (long at in new long[] { 0, 7 << 20, 31 << 20 })
            {
                rng.NextBytes(block);
                f.Position = at;
                f.Write(block);
            }
            f.SetLength(40 << 20);
        }
        // Random bytes with no partition table: only --raw sends such a file.
        var (report, results) = await LoopbackSession.RunAsync(ImageSource.Open(image, new ImageSourceOptions { Raw = true }), 3, arity, Sinks(i => dir.Sub($"copy{i}.img")),
            zstd ? WireCompression.Zstd : WireCompression.None);
        Assert.True(report.Success, report.Message + "\n" + report.FormatTable());
        byte[] expected = File.ReadAllBytes(image);
        for (int i = 0; i < 3; i++)
        {
            string copy = dir.Sub($"copy{i}.img");
            Assert.Equal(SHA256.HashData(expected), SHA256.HashData(File.ReadAllBytes(copy)));
            Assert.True(PayloadTestKit.AllocatedBytes(copy) < 8L << 20, $"{copy} is not sparse: {PayloadTestKit.AllocatedBytes(copy)} bytes allocated");
        }
        Assert.True(report.WireBytes < 4L << 20, $"zero blocks were sent: {report.WireBytes} wire bytes");
    }

    [SkippableTheory]
    [InlineData(1, false)]
    [InlineData(1, true)]
    [InlineData(3, false)]
    [InlineData(3, true)]
    public async Task BlockDeviceIsCopiedToEveryNodesDevice(int arity, bool zstd)
    {
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        using var dir = new TempDirectory("kad-dev");
        var content = new byte[24 << 20];
        new Random(9).NextBytes(content.AsSpan(3 << 20, 2 << 20));
        new Random(10).NextBytes(content.AsSpan(20 << 20, 1 << 20));
        using var source = LoopDevice.Attach(dir, "src.img", content);
        var garbage = new byte[24 << 20];
        Array.Fill(garbage, (byte)0xA5); // the zero blocks the image leaves out must read back as zero
        var targets = Enumerable.Range(0, 3).Select(i => LoopDevice.Attach(dir, $"t{i}.img", garbage)).ToArray();
        try
        {
            var (report, results) = await LoopbackSession.RunAsync(new BlockDeviceSource(source.Device), 3, arity,
                Sinks(_ => null, device: i => targets[i].Device), zstd ? WireCompression.Zstd : WireCompression.None);
            Assert.True(report.Success, report.Message + "\n" + report.FormatTable());
            foreach (var t in targets)
            {
                await using var f = File.OpenRead(t.Device);
                var back = new byte[content.Length];
                f.ReadExactly(back);
                Assert.True(content.AsSpan().SequenceEqual(back), $"{t.Device} differs from the source device");
            }
        }
        finally
        {
            foreach (var t in targets) t.Dispose();
        }
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(1, true)]
    [InlineData(3, false)]
    [InlineData(3, true)]
    public async Task CommandOutputIsPipedIntoEveryNodesCommand(int arity, bool zstd)
    {
        using var dir = new TempDirectory("kad-exec");
        string data = dir.Sub("data.bin");
        File.WriteAllBytes(data, RandomNumberGenerator.GetBytes(3_000_000));
        var (report, results) = await LoopbackSession.RunAsync(new CommandSource($"cat '{data}'"), 4, arity,
            Sinks(_ => null, exec: i => $"cat > '{dir.Sub($"out{i}")}'"), zstd ? WireCompression.Zstd : WireCompression.None);
        Assert.True(report.Success, report.Message + "\n" + report.FormatTable());
        for (int i = 0; i < 4; i++) Assert.Equal(File.ReadAllBytes(data), File.ReadAllBytes(dir.Sub($"out{i}")));
    }

    [Fact]
    public async Task TarFromACommandIntoATargetDirectoryIsExtracted()
    {
        // The original's default pair: the server runs tar c, each client extracts into its disk.
        using var dir = new TempDirectory("kad-exec-tar");
        string src = dir.Sub("src");
        Directory.CreateDirectory(Path.Combine(src, "etc"));
        File.WriteAllText(Path.Combine(src, "etc/hostname"), "golden\n");
        File.CreateSymbolicLink(Path.Combine(src, "link"), "/etc/hostname");
        for (int i = 0; i < 3; i++) Directory.CreateDirectory(dir.Sub($"node{i}"));
        var (report, _) = await LoopbackSession.RunAsync(new CommandSource($"tar -C '{src}' --numeric-owner -cf - ."), 3, 3,
            Sinks(i => dir.Sub($"node{i}")));
        Assert.True(report.Success, report.Message + "\n" + report.FormatTable());
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal("golden\n", File.ReadAllText(dir.Sub($"node{i}/etc/hostname")));
            Assert.Equal("/etc/hostname", new FileInfo(dir.Sub($"node{i}/link")).LinkTarget);
        }
    }

    [Fact]
    public async Task ANonEmptyTargetIsRefusedBeforeRegistering()
    {
        using var dir = new TempDirectory("kad-nonempty");
        File.WriteAllText(dir.Sub("precious"), "do not overwrite");
        var e = Assert.Throws<KaDeployException>(() => PayloadSelection.ClientSinks(dir.Path, null, null, false, false, TextWriter.Null));
        Assert.Contains("is not empty (use --force)", e.Message);
        Assert.NotNull(PayloadSelection.ClientSinks(dir.Path, null, null, force: true, false, TextWriter.Null));
    }
}

public class FullDiskTests
{
    [SkippableFact]
    public async Task AFullDiskFailsThatNodeWithAClearMessageAndTheOthersFinish()
    {
        Skip.IfNot(Environment.IsPrivilegedProcess, "mounting a small tmpfs to fill needs root");
        using var dir = new TempDirectory("kad-full");
        string src = dir.Sub("src");
        Directory.CreateDirectory(src);
        File.WriteAllBytes(Path.Combine(src, "big.bin"), RandomNumberGenerator.GetBytes(6 << 20));
        string small = dir.Sub("small");
        Directory.CreateDirectory(small);
        Assert.Equal(0, TempDirectory.Run("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", small));
        try
        {
            var (report, results) = await LoopbackSession.RunAsync(new TarTreeSource(new TarTreeSourceOptions { Root = src }), 3, 1,
                i => PayloadSelection.ClientSinks(i == 1 ? Path.Combine(small, "t") : dir.Sub($"node{i}"), null, null, false, false, TextWriter.Null));
            Assert.False(report.Success);
            var full = results[1];
            Assert.False(full.Verified);
            Assert.Contains("No space left on device", full.Message);
            Assert.DoesNotContain("\n", full.Message);
            Assert.True(results[0].Verified && results[2].Verified, "the nodes before and after the full one must finish");
            Assert.Empty(TreeComparer.Compare(src, dir.Sub("node2")));
        }
        finally
        {
            TempDirectory.Run("umount", "-l", small);
        }
    }
}
