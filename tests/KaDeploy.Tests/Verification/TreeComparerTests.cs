using KaDeploy.Platform;
using KaDeploy.Tests.TestSupport;
using KaDeploy.Verification;

namespace KaDeploy.Tests.Verification;

public sealed class TreeComparerTests : IDisposable
{
    private readonly TempDirectory _t = new("kad-cmp");
    private string A => _t.Sub("a");
    private string B => _t.Sub("b");

    public TreeComparerTests()
    {
        Directory.CreateDirectory(A);
        Directory.CreateDirectory(B);
    }

    public void Dispose() => _t.Dispose();

    // The roots are compared too (their metadata travels with the tree): after building both sides,
    // give them the same mtime, or the two directories differ by when they were last written.
    private void Both(Action<string> make)
    {
        make(A);
        make(B);
        Touch(A);
        Touch(B);
    }

    private static void Touch(string path) => Posix.SetTimes(path, 1_000_000_000, 5);

    [Fact]
    public void IdenticalTreesHaveNoDifferences()
    {
        Both(r => { File.WriteAllText(Path.Combine(r, "f"), "same"); Touch(Path.Combine(r, "f")); });
        Assert.Empty(TreeComparer.Compare(A, B));
    }

    private static byte[] Bytes(string dir, params byte[] name) => [.. System.Text.Encoding.UTF8.GetBytes(dir + "/"), .. name];

    private static void MakeFile(byte[] path)
    {
        using (PosixAt.CreateFile(LinuxNative.AT_FDCWD, path, 0x1A4, out int errno) ?? throw new IOException($"create: errno {errno}")) { }
        Assert.Equal(0, PosixAt.SetTimes(LinuxNative.AT_FDCWD, path, 1_000_000_000, 5));
    }

    // Decoded as UTF-8, "a\xff" and "a\xfe" are both "a\uFFFD": a comparer keyed by text saw one entry on each side
    // and called a copy that lost one of the two files identical.
    [Fact]
    public void NamesThatAreNotUtf8AreNeverMistakenForEachOther()
    {
        MakeFile(Bytes(A, (byte)'a', 0xFF));
        MakeFile(Bytes(A, (byte)'a', 0xFE));
        MakeFile(Bytes(B, (byte)'a', 0xFF));
        Touch(A);
        Touch(B);
        Assert.Equal(["a\\xfe: missing from copy"], TreeComparer.Compare(A, B));
    }

    [Fact]
    public void SymlinkTargetsAreComparedAsBytes()
    {
        Assert.Equal(0, PosixAt.MakeSymlink([(byte)'t', 0xFF], LinuxNative.AT_FDCWD, Bytes(A, (byte)'l')));
        Assert.Equal(0, PosixAt.MakeSymlink([(byte)'t', 0xFE], LinuxNative.AT_FDCWD, Bytes(B, (byte)'l')));
        Touch(A);
        Touch(B);
        Assert.Equal(["l: symlink target 't\\xff' vs 't\\xfe'"],
            TreeComparer.Compare(A, B, new TreeComparisonOptions { IgnoreDirectoryAndSymlinkMtimes = true }));
    }

    [Fact]
    public void NanosecondMtimeDifferenceIsReported()
    {
        Both(r => File.WriteAllText(Path.Combine(r, "f"), "same"));
        Posix.SetTimes(Path.Combine(A, "f"), 1_000_000_000, 5);
        Posix.SetTimes(Path.Combine(B, "f"), 1_000_000_000, 6);
        Assert.Equal(["f: mtime 1000000000.000000005 vs 1000000000.000000006"], TreeComparer.Compare(A, B));
    }

    [Fact]
    public void DirectoryAndSymlinkMtimesCanBeIgnored()
    {
        Both(r => { Directory.CreateDirectory(Path.Combine(r, "d")); File.CreateSymbolicLink(Path.Combine(r, "l"), "d"); });
        Posix.SetTimes(Path.Combine(A, "d"), 1, 0);
        Posix.SetTimes(Path.Combine(A, "l"), 1, 0);
        Assert.Equal(2, TreeComparer.Compare(A, B).Count);
        Assert.Empty(TreeComparer.Compare(A, B, new TreeComparisonOptions { IgnoreDirectoryAndSymlinkMtimes = true }));
    }

    [SkippableFact]
    public void XattrValuesAreComparedAsBytes()
    {
        Both(r => { File.WriteAllText(Path.Combine(r, "f"), "x"); Touch(Path.Combine(r, "f")); });
        Skip.IfNot(Posix.TrySetXattr(Path.Combine(A, "f"), "user.k", [1, 2, 3]) == 0, "user.* xattrs unsupported here");
        Posix.TrySetXattr(Path.Combine(B, "f"), "user.k", [1, 2, 4]);
        Posix.TrySetXattr(Path.Combine(A, "f"), "user.only-a", [0]);
        IReadOnlyList<string> d = TreeComparer.Compare(A, B);
        Assert.Contains("f: xattr user.k = 010203 vs 010204", d);
        Assert.Contains("f: xattr user.only-a missing from copy", d);
    }

    [Fact]
    public void LostHolesAreReported()
    {
        using (var fs = new FileStream(Path.Combine(A, "s"), FileMode.CreateNew)) fs.SetLength(8 << 20);
        File.WriteAllBytes(Path.Combine(B, "s"), new byte[8 << 20]);
        Both(r => Touch(Path.Combine(r, "s")));
        IReadOnlyList<string> d = TreeComparer.Compare(A, B);
        Assert.Single(d);
        Assert.StartsWith("s: holes lost (0 vs ", d[0]);
    }

    [SkippableFact]
    public void OwnersAndDevicesAreCompared()
    {
        Skip.IfNot(Environment.IsPrivilegedProcess, "needs root to create device nodes / chown");
        Posix.MakeNode(Path.Combine(A, "n"), FileKind.CharDevice, 0x1B6, 1, 3);
        Posix.MakeNode(Path.Combine(B, "n"), FileKind.CharDevice, 0x1B6, 1, 5);
        File.WriteAllText(Path.Combine(A, "o"), "");
        File.WriteAllText(Path.Combine(B, "o"), "");
        Posix.LChown(Path.Combine(B, "o"), 1234, 5678);
        Both(r => { Touch(Path.Combine(r, "n")); Touch(Path.Combine(r, "o")); });
        Assert.Equal(["n: device 1:3 vs 1:5", "o: owner 0:0 vs 1234:5678"], TreeComparer.Compare(A, B));
        Assert.Equal(["n: device 1:3 vs 1:5"], TreeComparer.Compare(A, B, new TreeComparisonOptions { CompareOwnership = false }));
    }

    [Fact]
    public void ExclusionsApplyToBothSides()
    {
        Both(r => Directory.CreateDirectory(Path.Combine(r, "proc")));
        File.WriteAllText(Path.Combine(A, "proc/1"), "");
        Directory.CreateDirectory(Path.Combine(B, "only-b"));
        var ignoreDirTimes = new TreeComparisonOptions { IgnoreDirectoryAndSymlinkMtimes = true };
        Assert.Equal(["only-b: only in copy", "proc/1: missing from copy"], TreeComparer.Compare(A, B, ignoreDirTimes));
        Assert.Empty(TreeComparer.Compare(A, B, ignoreDirTimes with { Excludes = ["proc/*", "only-b"] }));
    }
}
