using System.Formats.Tar;
using System.Text;
using KaDeploy.Payloads.Tar;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Payloads.Tar;

/// <summary>Archives that try to write outside the target, or to make the sink allocate without bound.</summary>
public sealed class HostileArchiveTests : IDisposable
{
    private readonly TempDirectory _dir = new("kad-hostile");
    private string Target => _dir.Sub("target/inner");
    private string Outside => _dir.Sub("target/outside"); // sentinel: a sibling that "../outside" would reach
    private string Secret => _dir.Sub("secret");

    public HostileArchiveTests()
    {
        Directory.CreateDirectory(Target);
        Directory.CreateDirectory(Outside);
        Directory.CreateDirectory(Secret);
        File.WriteAllText(Path.Combine(Secret, "data"), "secret");
    }

    public void Dispose() => _dir.Dispose();

    private static MemoryStream Archive(params TarEntry[] entries)
    {
        var ms = new MemoryStream();
        using (var w = new TarWriter(ms, TarEntryFormat.Pax, leaveOpen: true))
        {
            foreach (TarEntry e in entries) w.WriteEntry(e);
        }
        ms.Position = 0;
        return ms;
    }

    private static PaxTarEntry FileEntry(string name, string content = "pwned") =>
        new(TarEntryType.RegularFile, name) { DataStream = new MemoryStream(Encoding.UTF8.GetBytes(content)) };

    private static PaxTarEntry Link(TarEntryType type, string name, string target) => new(type, name) { LinkName = target };

    private async Task<string> RefusedAsync(Stream archive)
    {
        var sink = new TarTreeSink(new TarTreeSinkOptions { Target = Target, Force = true });
        var ex = await Assert.ThrowsAsync<KaDeployException>(() => sink.ConsumeAsync(archive, default));
        Assert.DoesNotContain('\n', ex.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(Outside));
        Assert.Equal(["data"], Directory.EnumerateFileSystemEntries(Secret).Select(Path.GetFileName));
        Assert.Equal("secret", File.ReadAllText(Path.Combine(Secret, "data")));
        Assert.False(File.Exists(_dir.Sub("target/x")));
        return ex.Message;
    }

    [Theory]
    [InlineData("../outside/x", "'..' component")]
    [InlineData("a/../../outside/x", "'..' component")]
    [InlineData("./../outside/x", "'..' component")]
    public async Task DotDotIsRefused(string name, string why)
    {
        string msg = await RefusedAsync(Archive(FileEntry(name)));
        Assert.Contains($"refusing tar entry '{name}'", msg);
        Assert.Contains(why, msg);
    }

    [Fact]
    public async Task AbsolutePathIsRefused()
    {
        string name = Outside + "/x";
        string msg = await RefusedAsync(Archive(FileEntry(name)));
        Assert.Equal($"refusing tar entry '{name}': absolute path", msg);
    }

    [Fact]
    public async Task NulByteIsRefused()
    {
        var ms = new MemoryStream();
        using (var w = new PaxArchiveWriter(ms, 64 * 1024))
        {
            w.BeginRecords();
            await w.WriteHeaderAsync(new string('a', 120) + "\0/../x", '0', 0x1A4, 0, 0, 0, 0, 0, null, 0, 0, default);
            await w.FinishAsync(default);
        }
        ms.Position = 0;
        string msg = await RefusedAsync(ms);
        Assert.Contains("NUL", msg);
    }

    [Theory]
    [InlineData("abs")]
    [InlineData("..")]
    [InlineData("../outside")]
    public async Task WritingThroughAPlantedSymlinkIsRefused(string target)
    {
        if (target == "abs") target = Outside;
        string msg = await RefusedAsync(Archive(Link(TarEntryType.SymbolicLink, "a", target), FileEntry("a/pwned")));
        Assert.Equal("refusing tar entry 'a/pwned': parent 'a' is a symlink, not a directory", msg);
    }

    [Fact]
    public async Task DirectoryEntryThroughASymlinkIsRefused()
    {
        string msg = await RefusedAsync(Archive(
            Link(TarEntryType.SymbolicLink, "a", Outside),
            new PaxTarEntry(TarEntryType.Directory, "a/sub/"),
            FileEntry("a/sub/pwned")));
        Assert.Contains("parent 'a' is a symlink", msg);
    }

    [Fact]
    public async Task PreExistingSymlinkInTargetIsNotFollowed()
    {
        File.CreateSymbolicLink(Path.Combine(Target, "etc"), Outside);
        string msg = await RefusedAsync(Archive(FileEntry("etc/passwd")));
        Assert.Contains("parent 'etc' is a symlink", msg);
    }

    [Theory]
    [InlineData("../outside/x")]
    [InlineData("/etc/passwd")]
    public async Task HardLinkOutsideIsRefused(string target)
    {
        string msg = await RefusedAsync(Archive(Link(TarEntryType.HardLink, "h", target)));
        Assert.Contains("refusing tar entry 'h': hard link target", msg);
    }

    [Fact]
    public async Task HardLinkThroughPlantedSymlinkIsRefused()
    {
        string msg = await RefusedAsync(Archive(
            Link(TarEntryType.SymbolicLink, "s", Secret),
            Link(TarEntryType.HardLink, "h", "s/data")));
        Assert.Contains("hard link target parent 's' is not a directory", msg);
        Assert.False(File.Exists(Path.Combine(Target, "h")));
    }

    [Fact]
    public async Task ReplacingAFileBySymlinkThenWritingIsSafe()
    {
        // A later entry replaces a directory the sink already created; its cache must not trust it afterwards.
        string msg = await RefusedAsync(Archive(
            new PaxTarEntry(TarEntryType.Directory, "d/"),
            FileEntry("d/ok"),
            Link(TarEntryType.SymbolicLink, "e", Outside),
            FileEntry("e/pwned")));
        Assert.Contains("parent 'e' is a symlink", msg);
    }

    [Fact]
    public async Task AbsurdSizeIsRefused()
    {
        var ms = new MemoryStream();
        using (var w = new PaxArchiveWriter(ms, 64 * 1024))
        {
            w.BeginRecords();
            await w.WriteHeaderAsync("huge", '0', 0x1A4, 0, 0, 1L << 60, 0, 0, null, 0, 0, default);
            await w.WriteZerosAsync(4096, default);
            await w.FinishAsync(default);
        }
        ms.Position = 0;
        // Over the network the stream is unseekable: TarReader hands the entry over and the sink must refuse it.
        string msg = await RefusedAsync(new UnseekableStream(ms));
        Assert.Equal($"refusing tar entry 'huge': size {1L << 60} is absurd", msg);
        ms.Position = 0;
        // Seekable, TarReader may refuse the size before the sink sees the entry: refused either way, in one line.
        Assert.Matches("^refusing tar (entry 'huge': size [0-9]+ is absurd|stream: .+)$", await RefusedAsync(ms));
    }

    private static async Task<MemoryStream> SparseAsync(string realSize, string map, long? declaredSize = null)
    {
        var ms = new MemoryStream();
        using (var w = new PaxArchiveWriter(ms, 64 * 1024))
        {
            byte[] m = Encoding.ASCII.GetBytes(map);
            long padded = (m.Length + 511) / 512 * 512;
            w.BeginRecords();
            w.AddRecord("GNU.sparse.major", "1");
            w.AddRecord("GNU.sparse.minor", "0");
            w.AddRecord("GNU.sparse.name", "sparse");
            w.AddRecord("GNU.sparse.realsize", realSize);
            await w.WriteHeaderAsync("GNUSparseFile.0/sparse", '0', 0x1A4, 0, 0, declaredSize ?? padded, 0, 0, null, 0, 0, default);
            await w.WriteBytesAsync(m, default);
            await w.PadAsync(m.Length, default);
            await w.FinishAsync(default);
        }
        ms.Position = 0;
        return ms;
    }

    [Fact]
    public async Task HugeSparseMapIsRefused()
    {
        string msg = await RefusedAsync(await SparseAsync("100", "4000000000\n0\n10\n"));
        Assert.Equal("refusing tar entry 'sparse': sparse map with 4000000000 segments", msg);
    }

    [Fact]
    public async Task SparseSegmentBeyondRealSizeIsRefused()
    {
        string msg = await RefusedAsync(await SparseAsync("100", "1\n200\n10\n", 512 + 10));
        Assert.Contains("beyond realsize 100", msg);
    }

    [Fact]
    public async Task AbsurdSparseRealSizeIsRefused()
    {
        string msg = await RefusedAsync(await SparseAsync("99999999999999999999", "1\n0\n0\n"));
        Assert.Contains("realsize", msg);
    }

    [Fact]
    public async Task EndlessSparseMapIsRefused()
    {
        // A map that never reaches its announced count: stops at the size limit, not at memory exhaustion.
        var sb = new StringBuilder($"{TarTreeSink.MaxSparseSegments}\n");
        while (sb.Length < TarTreeSink.MaxSparseMapBytes + 4096) sb.Append("1\n");
        string msg = await RefusedAsync(await SparseAsync("100", sb.ToString()));
        Assert.Contains($"sparse map longer than {TarTreeSink.MaxSparseMapBytes} bytes", msg);
    }

    [Fact]
    public async Task TruncatedArchiveIsAnError()
    {
        MemoryStream full = Archive(FileEntry("f", new string('x', 5000)));
        var cut = new MemoryStream(full.ToArray()[..2048]);
        await RefusedAsync(cut);
    }

    private sealed class UnseekableStream(Stream inner) : KaDeploy.IO.SequentialReadStream
    {
        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);
    }
}

/// <summary>Tests that measure the process's allocations, so they run with no other test beside them.</summary>
[CollectionDefinition(nameof(AllocationMeasuring), DisableParallelization = true)]
public sealed class AllocationMeasuring;

/// <summary>A huge declared metadata entry is refused before anything of its size is allocated.</summary>
[Collection(nameof(AllocationMeasuring))]
public sealed class MetadataAllocationTests : IDisposable
{
    private readonly TempDirectory _dir = new("kad-alloc");

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData('x', "07777777777")] // 1 GiB pax header: .NET 10's TarReader would rent a buffer that large
    [InlineData('L', "00777777777")]
    public async Task HugeMetadataEntryIsRefusedBeforeAllocation(char type, string octalSize)
    {
        byte[] h = new byte[512];
        "PaxHeader"u8.CopyTo(h);
        "0000644\0"u8.CopyTo(h.AsSpan(100));
        "0000000\0"u8.CopyTo(h.AsSpan(108));
        "0000000\0"u8.CopyTo(h.AsSpan(116));
        Encoding.ASCII.GetBytes(octalSize + "\0").CopyTo(h, 124);
        "00000000000\0"u8.CopyTo(h.AsSpan(136));
        h[156] = (byte)type;
        "ustar\000"u8.CopyTo(h.AsSpan(257));
        h.AsSpan(148, 8).Fill((byte)' ');
        int sum = 0;
        foreach (byte b in h) sum += b;
        Encoding.ASCII.GetBytes(Convert.ToString(sum, 8).PadLeft(6, '0') + "\0 ").CopyTo(h, 148);
        var ms = new MemoryStream();
        ms.Write(h);
        ms.Write(new byte[1 << 16]);
        ms.Position = 0;
        // Counted over the whole process (the sink's awaits resume on other threads), with no other test
        // running (see the collection): anything near the declared gigabyte is the sink's doing.
        var sink = new TarTreeSink(new TarTreeSinkOptions { Target = _dir.Path, Force = true });
        long before = GC.GetTotalAllocatedBytes(precise: true);
        var e = await Assert.ThrowsAsync<KaDeployException>(() => sink.ConsumeAsync(ms, default));
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        Assert.StartsWith($"refusing tar stream: a '{type}' metadata entry of", e.Message);
        Assert.True(allocated < 64 << 20, $"allocated {allocated} bytes: the declared size");
    }
}
