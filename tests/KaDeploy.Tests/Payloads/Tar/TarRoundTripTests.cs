using System.IO.Pipes;
using KaDeploy.Payloads.Tar;
using KaDeploy.Platform;
using KaDeploy.Tests.TestSupport;
using KaDeploy.Verification;

namespace KaDeploy.Tests.Payloads.Tar;

public class TarRoundTripTests
{
    private static async Task<(IReadOnlyList<string> Diffs, List<string> Warnings)> RoundTripAsync(
        string src, string dst, bool viaPipe)
    {
        var warnings = new List<string>();
        var source = new TarTreeSource(new TarTreeSourceOptions { Root = src, Warn = warnings.Add, BufferSize = 64 * 1024 });
        var sink = new TarTreeSink(new TarTreeSinkOptions { Target = dst, Warn = warnings.Add, BufferSize = 64 * 1024 });
        sink.EnsureTargetUsable();
        if (viaPipe)
        {
            // Unseekable, like the network: proves both sides stream.
            using var server = new AnonymousPipeServerStream(PipeDirection.Out);
            using var client = new AnonymousPipeClientStream(PipeDirection.In, server.ClientSafePipeHandle);
            Task produce = Task.Run(async () =>
            {
                await source.WriteToAsync(server, default);
                server.Dispose();
            });
            await sink.ConsumeAsync(client, default);
            await produce;
        }
        else
        {
            var ms = new MemoryStream();
            await source.WriteToAsync(ms, default);
            ms.Position = 0;
            await sink.ConsumeAsync(ms, default);
        }
        Assert.True(sink.Summary.Entries > 10, $"only {sink.Summary.Entries} entries");
        return (TreeComparer.Compare(src, dst, new TreeComparisonOptions { CompareOwnership = SampleTree.IsRoot }), warnings);
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task EveryEntryTypeSurvivesTheRoundTrip(bool viaPipe)
    {
        using var t = new TempDirectory();
        SampleTree.Built built = SampleTree.Create(t.Sub("src"));
        (IReadOnlyList<string> diffs, List<string> warnings) = await RoundTripAsync(t.Sub("src"), t.Sub("dst"), viaPipe);
        Assert.Empty(diffs);
        Assert.Empty(warnings);
        Skip.IfNot(built.Devices && built.UserXattrs && built.Ownership, "partly covered: " + SampleTree.Describe(built));
    }

    [Fact]
    public async Task SparseFilesStaySparse()
    {
        using var t = new TempDirectory();
        SampleTree.Create(t.Sub("src"), withXattrs: false);
        await RoundTripAsync(t.Sub("src"), t.Sub("dst"), viaPipe: false);
        FileStatus a = Posix.LStat(t.Sub("src/sparse.img")), b = Posix.LStat(t.Sub("dst/sparse.img"));
        Assert.Equal(12L << 20, b.Size);
        Assert.True(b.Blocks * 512 <= 1 << 20, $"{b.Blocks} blocks allocated for the sparse copy");
        Assert.True(a.Blocks * 512 < a.Size);
        Assert.Equal(0, Posix.LStat(t.Sub("dst/all-hole.img")).Blocks);
    }

    [Fact]
    public async Task ComparerSeesDifferences()
    {
        using var t = new TempDirectory();
        SampleTree.Create(t.Sub("src"), withXattrs: false);
        await RoundTripAsync(t.Sub("src"), t.Sub("dst"), viaPipe: false);
        File.WriteAllText(t.Sub("dst/file.txt"), "hello World\n");
        Posix.ChangeMode(t.Sub("dst/suid"), 0x1ED);
        File.Delete(t.Sub("dst/hl2"));
        File.Copy(t.Sub("dst/dir/hl1"), t.Sub("dst/hl2"));
        Posix.SetTimes(t.Sub("dst/big.bin"), 1, 2);
        File.Delete(t.Sub("dst/rel-link"));
        File.CreateSymbolicLink(t.Sub("dst/rel-link"), "other");
        File.WriteAllText(t.Sub("dst/extra"), "");
        IReadOnlyList<string> diffs = TreeComparer.Compare(t.Sub("src"), t.Sub("dst"));
        string all = string.Join("\n", diffs);
        Assert.Contains("file.txt: content differs at byte 6", all);
        Assert.Contains("suid: mode 4755 vs 0755", all);
        Assert.Contains("hl2: hard-linked with dir/hl1 vs nothing", all);
        Assert.Contains("big.bin: mtime", all);
        Assert.Contains("rel-link: symlink target 'file.txt' vs 'other'", all);
        Assert.Contains("extra: only in copy", all);
    }

    [SkippableFact]
    public async Task GnuTarExtractsTheArchive()
    {
        Skip.If(TempDirectory.Run("tar", "--version") != 0, "GNU tar not installed");
        using var t = new TempDirectory();
        SampleTree.Create(t.Sub("src"), withXattrs: false);
        string archive = t.Sub("a.tar");
        await using (var f = File.Create(archive))
        {
            await new TarTreeSource(new TarTreeSourceOptions { Root = t.Sub("src") }).WriteToAsync(f, default);
        }
        Directory.CreateDirectory(t.Sub("gnu"));
        (int code, string output) = TempDirectory.RunCapture("tar", "-xpf", archive, "-C", t.Sub("gnu"));
        Assert.True(code == 0, output);
        Assert.Empty(TreeComparer.Compare(t.Sub("src"), t.Sub("gnu"), new TreeComparisonOptions { CompareOwnership = SampleTree.IsRoot }));
        Assert.True(Posix.LStat(t.Sub("gnu/sparse.img")).Blocks * 512 <= 1 << 20, "GNU tar did not restore holes");
    }

    [SkippableFact]
    public async Task ExtractsWhatGnuTarWrites()
    {
        Skip.If(TempDirectory.Run("tar", "--version") != 0, "GNU tar not installed");
        using var t = new TempDirectory();
        SampleTree.Create(t.Sub("src"), withXattrs: false);
        string archive = t.Sub("gnu.tar");
        (int code, string output) = TempDirectory.RunCapture("tar", "--format=pax", "--sparse", "--sparse-version=1.0",
            "--numeric-owner", "-cpf", archive, "-C", t.Sub("src"), ".");
        Assert.True(code == 0, output);
        var warnings = new List<string>();
        var sink = new TarTreeSink(new TarTreeSinkOptions { Target = t.Sub("dst"), Warn = warnings.Add });
        sink.EnsureTargetUsable();
        await using (var f = File.OpenRead(archive))
        {
            await sink.ConsumeAsync(f, default);
        }
        Assert.Empty(warnings);
        Assert.Empty(TreeComparer.Compare(t.Sub("src"), t.Sub("dst"), new TreeComparisonOptions { CompareOwnership = SampleTree.IsRoot }));
        Assert.True(Posix.LStat(t.Sub("dst/sparse.img")).Blocks * 512 <= 1 << 20, "holes not restored");
    }

    [Fact]
    public void NonEmptyTargetNeedsForce()
    {
        using var t = new TempDirectory();
        File.WriteAllText(t.Sub("x"), "x");
        var ex = Assert.Throws<KaDeployException>(() => new TarTreeSink(new TarTreeSinkOptions { Target = t.Path }).EnsureTargetUsable());
        Assert.Equal($"target {t.Path} is not empty (use --force)", ex.Message);
        new TarTreeSink(new TarTreeSinkOptions { Target = t.Path, Force = true }).EnsureTargetUsable();
        Directory.CreateDirectory(t.Sub("fresh/lost+found"));
        new TarTreeSink(new TarTreeSinkOptions { Target = t.Sub("fresh") }).EnsureTargetUsable();
        new TarTreeSink(new TarTreeSinkOptions { Target = t.Sub("new/deeper") }).EnsureTargetUsable();
        Assert.True(Directory.Exists(t.Sub("new/deeper")));
    }

    [Fact]
    public async Task TargetGivenThroughASymlinkWorks()
    {
        using var t = new TempDirectory();
        File.WriteAllText(t.Sub("f"), "x");
        Directory.CreateDirectory(t.Sub("real"));
        File.CreateSymbolicLink(t.Sub("via"), t.Sub("real"));
        var ms = new MemoryStream();
        await new TarTreeSource(new TarTreeSourceOptions { Root = t.Path, Excludes = ["real", "via"] }).WriteToAsync(ms, default);
        ms.Position = 0;
        var sink = new TarTreeSink(new TarTreeSinkOptions { Target = t.Sub("via") });
        sink.EnsureTargetUsable();
        await sink.ConsumeAsync(ms, default);
        Assert.Equal("x", File.ReadAllText(t.Sub("real/f")));
        Assert.Equal(new TarExtractionSummary(2, 1), sink.Summary);
    }

    [Fact]
    public async Task ForceReplacesExistingFiles()
    {
        using var t = new TempDirectory();
        SampleTree.Create(t.Sub("src"), withXattrs: false);
        Directory.CreateDirectory(t.Sub("dst"));
        File.WriteAllText(t.Sub("dst/file.txt"), "old content that is longer");
        File.CreateSymbolicLink(t.Sub("dst/big.bin"), "/etc/passwd"); // must be replaced, not written through
        var ms = new MemoryStream();
        await new TarTreeSource(new TarTreeSourceOptions { Root = t.Sub("src") }).WriteToAsync(ms, default);
        ms.Position = 0;
        var sink = new TarTreeSink(new TarTreeSinkOptions { Target = t.Sub("dst"), Force = true });
        sink.EnsureTargetUsable();
        await sink.ConsumeAsync(ms, default);
        Assert.Empty(TreeComparer.Compare(t.Sub("src"), t.Sub("dst"), new TreeComparisonOptions { CompareOwnership = SampleTree.IsRoot }));
    }

    [Fact]
    public async Task ExclusionsAndSocketsAreLeftOut()
    {
        using var t = new TempDirectory();
        Directory.CreateDirectory(t.Sub("src/proc/1"));
        Directory.CreateDirectory(t.Sub("src/tmp"));
        File.WriteAllText(t.Sub("src/tmp/.hidden"), "x");
        File.WriteAllText(t.Sub("src/keep"), "x");
        Directory.CreateDirectory(t.Sub("src/mnt/target/deep"));
        Posix.MakeNode(t.Sub("src/sock"), FileKind.Socket, 0x1ED, 0, 0);
        var warnings = new List<string>();
        var ms = new MemoryStream();
        var source = new TarTreeSource(new TarTreeSourceOptions
        {
            Root = t.Sub("src"),
            Excludes = TarTreeSource.DefaultExclusions(t.Sub("src"), t.Sub("src/mnt/target")),
            Warn = warnings.Add,
        });
        await source.WriteToAsync(ms, default);
        ms.Position = 0;
        var names = new List<string>();
        using var r = new System.Formats.Tar.TarReader(ms);
        while (r.GetNextEntry() is { } e) names.Add(e.Name);
        Assert.Equal(["./", "keep", "mnt/", "proc/", "tmp/"], names);
        Assert.Single(warnings, w => w.Contains("socket"));
    }
}
