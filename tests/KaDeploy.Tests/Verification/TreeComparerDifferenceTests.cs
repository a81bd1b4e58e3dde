using KaDeploy.Platform;
using KaDeploy.Tests.TestSupport;
using KaDeploy.Verification;

namespace KaDeploy.Tests.Verification;

/// <summary>
/// One test per kind of difference the comparer must report, each with the exact line expected: written
/// against the mutants Stryker left alive in <c>Verification/</c> (a difference that is only half-checked,
/// an off-by-one at a chunk or tolerance boundary, a limit that is never reached).
/// </summary>
public sealed class TreeComparerDifferenceTests : IDisposable
{
    private readonly TempDirectory _t = new("kad-cmpd");
    private string A => _t.Sub("a");
    private string B => _t.Sub("b");

    public TreeComparerDifferenceTests()
    {
        Directory.CreateDirectory(A);
        Directory.CreateDirectory(B);
    }

    public void Dispose() => _t.Dispose();

    private static void Touch(string path) => Posix.SetTimes(path, 1_000_000_000, 5);

    // Gives every entry on both sides (and the roots) one mtime, so that only the planted difference remains.
    private void SameTimes()
    {
        foreach (string root in new[] { A, B })
        {
            foreach (string p in Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories)) Touch(p);
            Touch(root);
        }
    }

    private void Write(string rel, byte[] bytesA, byte[] bytesB)
    {
        File.WriteAllBytes(Path.Combine(A, rel), bytesA);
        File.WriteAllBytes(Path.Combine(B, rel), bytesB);
    }

    [Fact]
    public void ADifferentTypeIsReportedAloneForThatEntry()
    {
        File.WriteAllText(Path.Combine(A, "x"), "file");
        Directory.CreateDirectory(Path.Combine(B, "x"));
        Posix.ChangeMode(Path.Combine(A, "x"), 0x1C0); // 0700, unlike the directory: still only the type is reported
        SameTimes();
        Assert.Equal(["x: type Regular vs Directory"], TreeComparer.Compare(A, B));
    }

    [Fact]
    public void AModeDifferenceIsReportedInOctal()
    {
        Write("f", [1], [1]);
        Posix.ChangeMode(Path.Combine(A, "f"), 0x9A4); // 04644
        Posix.ChangeMode(Path.Combine(B, "f"), 0x1A0); // 0640
        SameTimes();
        Assert.Equal(["f: mode 4644 vs 0640"], TreeComparer.Compare(A, B));
    }

    [Fact]
    public void SecondsOfAnMtimeAreComparedNotOnlyNanoseconds()
    {
        Write("f", [1], [1]);
        SameTimes();
        Posix.SetTimes(Path.Combine(B, "f"), 1_000_000_001, 5);
        Assert.Equal(["f: mtime 1000000000.000000005 vs 1000000001.000000005"], TreeComparer.Compare(A, B));
    }

    [SkippableFact]
    public void AGroupDifferenceAloneIsReported()
    {
        Skip.IfNot(Environment.IsPrivilegedProcess, "needs root to chown");
        Write("u", [1], [1]);
        Write("g", [1], [1]);
        Posix.LChown(Path.Combine(B, "u"), 1234, 0);
        Posix.LChown(Path.Combine(B, "g"), 0, 5678);
        SameTimes();
        Assert.Equal(["g: owner 0:0 vs 0:5678", "u: owner 0:0 vs 1234:0"], TreeComparer.Compare(A, B));
    }

    [SkippableFact]
    public void ADeviceMajorDifferenceAloneIsReported()
    {
        Skip.IfNot(Environment.IsPrivilegedProcess, "needs root to create device nodes");
        Posix.MakeNode(Path.Combine(A, "n"), FileKind.BlockDevice, 0x1B0, 7, 200);
        Posix.MakeNode(Path.Combine(B, "n"), FileKind.BlockDevice, 0x1B0, 8, 200);
        SameTimes();
        Assert.Equal(["n: device 7:200 vs 8:200"], TreeComparer.Compare(A, B));
    }

    [Fact]
    public void ASizeDifferenceIsReportedWithoutAContentLine()
    {
        Write("f", [1, 2, 3, 4], [1, 2, 3, 4, 5]);
        SameTimes();
        Assert.Equal(["f: size 4 vs 5"], TreeComparer.Compare(A, B));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData((1 << 20) - 1)] // last byte of the first chunk
    [InlineData(1 << 20)]       // first byte of the second chunk
    [InlineData((2 << 20) + 4)] // last byte of the file, in its third, short chunk
    public void AContentDifferenceIsReportedAtItsExactByte(int at)
    {
        var rng = new Random(at);
        byte[] a = new byte[(2 << 20) + 5];
        rng.NextBytes(a);
        byte[] b = (byte[])a.Clone();
        b[at] ^= 0x01;
        Write("f", a, b);
        SameTimes();
        Assert.Equal([$"f: content differs at byte {at}"], TreeComparer.Compare(A, B));
    }

    [Fact]
    public void EqualContentAcrossSeveralChunksIsEqual()
    {
        var rng = new Random(7);
        byte[] a = new byte[(2 << 20) + 5];
        rng.NextBytes(a);
        Write("f", a, a);
        Write("empty", [], []);
        SameTimes();
        Assert.Empty(TreeComparer.Compare(A, B));
    }

    [Fact]
    public void HardLinkGroupsAreCompared()
    {
        // A: f1 and f2 are one inode; B: two separate files with the same bytes.
        File.WriteAllText(Path.Combine(A, "f1"), "same");
        Posix.MakeHardLink(Path.Combine(A, "f1"), Path.Combine(A, "f2"));
        Write("f3", [1], [1]);
        File.WriteAllText(Path.Combine(B, "f1"), "same");
        File.WriteAllText(Path.Combine(B, "f2"), "same");
        SameTimes();
        Assert.Equal(["f1: hard-linked with f1 vs nothing", "f2: hard-linked with f1 vs nothing"], TreeComparer.Compare(A, B));
    }

    [Fact]
    public void HardLinkGroupsThatPairDifferentNamesAreReported()
    {
        // Both sides have two pairs, but paired differently: (a,b)(c,d) vs (a,c)(b,d).
        foreach (string n in new[] { "a", "c" }) File.WriteAllText(Path.Combine(A, n), "x");
        Posix.MakeHardLink(Path.Combine(A, "a"), Path.Combine(A, "b"));
        Posix.MakeHardLink(Path.Combine(A, "c"), Path.Combine(A, "d"));
        foreach (string n in new[] { "a", "b" }) File.WriteAllText(Path.Combine(B, n), "x");
        Posix.MakeHardLink(Path.Combine(B, "a"), Path.Combine(B, "c"));
        Posix.MakeHardLink(Path.Combine(B, "b"), Path.Combine(B, "d"));
        SameTimes();
        Assert.Equal(["b: hard-linked with a vs b", "c: hard-linked with c vs a", "d: hard-linked with c vs b"], TreeComparer.Compare(A, B));
    }

    [Fact]
    public void SameHardLinkGroupsAreEqual()
    {
        foreach (string root in new[] { A, B })
        {
            Directory.CreateDirectory(Path.Combine(root, "d"));
            File.WriteAllText(Path.Combine(root, "d/f"), "x");
            Posix.MakeHardLink(Path.Combine(root, "d/f"), Path.Combine(root, "g"));
        }
        SameTimes();
        Assert.Empty(TreeComparer.Compare(A, B));
    }

    [Fact]
    public void ASymlinkTargetDifferenceIsReported()
    {
        File.CreateSymbolicLink(Path.Combine(A, "l"), "to/a");
        File.CreateSymbolicLink(Path.Combine(B, "l"), "to/b");
        SameTimes();
        Assert.Equal(["l: symlink target 'to/a' vs 'to/b'"], TreeComparer.Compare(A, B));
    }

    [Fact]
    public void ComparisonStopsAfterMaxDifferences()
    {
        for (int i = 0; i < 5; i++) File.WriteAllText(Path.Combine(A, $"f{i}"), "x");
        SameTimes();
        Assert.Equal(
            ["f0: missing from copy", "f1: missing from copy", "... stopped after 2 differences"],
            TreeComparer.Compare(A, B, new TreeComparisonOptions { MaxDifferences = 2 }));
        Assert.Equal(5, TreeComparer.Compare(A, B, new TreeComparisonOptions { MaxDifferences = 5 }).Count);
    }

    [SkippableFact]
    public void AnXattrOnlyInTheCopyIsReported()
    {
        Write("f", [1], [1]);
        Skip.IfNot(Posix.TrySetXattr(Path.Combine(B, "f"), "user.extra", [7]) == 0, "user.* xattrs unsupported here");
        Posix.TrySetXattr(Path.Combine(A, "f"), "user.same", [1, 2]);
        Posix.TrySetXattr(Path.Combine(B, "f"), "user.same", [1, 2]);
        SameTimes();
        Assert.Equal(["f: xattr user.extra only in copy"], TreeComparer.Compare(A, B));
    }

    [SkippableFact]
    public void AFewBlocksMoreForASparseFileAreWithinToleranceButMoreAreNot()
    {
        // A: 8 MiB, all hole (0 blocks). The tolerance for so small an allocation is 128 blocks (64 KiB).
        const int size = 8 << 20;
        foreach (string n in new[] { "within", "beyond" })
        {
            using var fs = new FileStream(Path.Combine(A, n), FileMode.CreateNew);
            fs.SetLength(size);
        }
        // B: the same bytes (all zero), with 64 KiB of explicitly written zeros (128 blocks) or 68 KiB (136).
        WriteZerosInHole(Path.Combine(B, "within"), size, 64 << 10);
        WriteZerosInHole(Path.Combine(B, "beyond"), size, 68 << 10);
        SameTimes();
        long within = Posix.LStat(Path.Combine(B, "within")).Blocks, beyond = Posix.LStat(Path.Combine(B, "beyond")).Blocks;
        Skip.If(within != 128 || beyond != 136, $"file system allocates in other units ({within}, {beyond} blocks)");
        Assert.Equal(["beyond: holes lost (0 vs 136 blocks allocated for 8388608 bytes)"], TreeComparer.Compare(A, B));
    }

    private static void WriteZerosInHole(string path, int size, int zeros)
    {
        using var fs = new FileStream(path, FileMode.CreateNew);
        fs.SetLength(size);
        fs.Seek(1 << 20, SeekOrigin.Begin);
        fs.Write(new byte[zeros]);
    }
}
