using KaDeploy.Payloads.Tar;
using KaDeploy.Platform;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Payloads.Tar;

/// <summary>Issue 14: the size estimate, hard-linked symlinks, and directory times under every entry order.</summary>
public class ManyFilesTests
{
    private static async Task<long> WrittenLengthAsync(string root)
    {
        var ms = new MemoryStream();
        var source = new TarTreeSource(new TarTreeSourceOptions { Root = root });
        await source.WriteToAsync(ms, default);
        Assert.Equal(ms.Length, source.BytesWritten);
        return ms.Length;
    }

    [Fact]
    public async Task EstimateIsExactlyWhatTheWriterEmitsForASmallTree()
    {
        using var t = new TempDirectory();
        string root = t.Sub("tree");
        Directory.CreateDirectory(root);
        foreach (int size in (int[])[0, 1, 511, 512, 513, 4096, 100_000])
        {
            File.WriteAllBytes(Path.Combine(root, $"f{size}"), new byte[size]);
        }
        string deep = Path.Combine(root, new string('d', 60), new string('e', 60));
        Directory.CreateDirectory(deep);
        File.WriteAllText(Path.Combine(deep, "long-name-" + new string('x', 90)), "name longer than 100 bytes");
        File.CreateSymbolicLink(Path.Combine(root, "short-link"), "f1");
        File.CreateSymbolicLink(Path.Combine(root, "long-link"), "/" + new string('t', 150));
        File.CreateSymbolicLink(Path.Combine(root, "dangling"), "nowhere");
        Assert.Equal(0, TempDirectory.Run("ln", Path.Combine(root, "f513"), Path.Combine(root, "f513-again")));
        Assert.Equal(0, TempDirectory.Run("ln", Path.Combine(root, "f513"), Path.Combine(deep, "f513-" + new string('y', 90))));
        Assert.Equal(0, TempDirectory.Run("ln", Path.Combine(root, "short-link"), Path.Combine(root, "short-link-again")));
        Assert.Equal(0, TempDirectory.Run("mkfifo", Path.Combine(root, "fifo")));
        // A name that is not UTF-8 (hdrcharset record) and times with and without nanoseconds.
        byte[] odd = [.. System.Text.Encoding.UTF8.GetBytes(root), (byte)'/', 0xFF, 0xFE, (byte)'n'];
        using (PosixAt.CreateFile(LinuxNative.AT_FDCWD, odd, 0x1A4, out int errno) ?? throw new IOException($"create: errno {errno}"))
        {
        }
        Posix.SetTimes(Path.Combine(root, "f1"), 1_700_000_000, 0);
        Posix.SetTimes(Path.Combine(root, "f0"), -5, 250_000_000);

        long estimate = await new TarTreeSource(new TarTreeSourceOptions { Root = root }).EstimateLengthAsync(default);

        Assert.Equal(await WrittenLengthAsync(root), estimate);
    }

    [SkippableFact]
    public async Task EstimateCountsLargeOwnerIdsAsTheWriterDoes()
    {
        Skip.IfNot(Environment.IsPrivilegedProcess, "needs root to chown");
        using var t = new TempDirectory();
        string root = t.Sub("tree");
        Directory.CreateDirectory(root);
        File.WriteAllText(Path.Combine(root, "big-ids"), "x");
        Assert.Equal(0, TempDirectory.Run("chown", "-h", "3000000:4000000", Path.Combine(root, "big-ids")));
        long estimate = await new TarTreeSource(new TarTreeSourceOptions { Root = root }).EstimateLengthAsync(default);
        Assert.Equal(await WrittenLengthAsync(root), estimate);
    }

    [Fact]
    public async Task AHardLinkedSymlinkArrivesAsOneInodeWithTwoNames()
    {
        using var t = new TempDirectory();
        string src = t.Sub("src"), dst = t.Sub("dst");
        Directory.CreateDirectory(src);
        File.CreateSymbolicLink(Path.Combine(src, "a"), "target-of-a");
        Assert.Equal(0, TempDirectory.Run("ln", Path.Combine(src, "a"), Path.Combine(src, "b")));

        var pipe = new MemoryStream();
        await new TarTreeSource(new TarTreeSourceOptions { Root = src }).WriteToAsync(pipe, default);
        pipe.Position = 0;
        await new TarTreeSink(new TarTreeSinkOptions { Target = dst }).ConsumeAsync(pipe, default);

        FileStatus a = Posix.LStat(Path.Combine(dst, "a")), b = Posix.LStat(Path.Combine(dst, "b"));
        Assert.Equal(FileKind.Symlink, b.Kind);
        Assert.Equal(a.Inode, b.Inode);
        Assert.Equal("target-of-a", new FileInfo(Path.Combine(dst, "b")).LinkTarget);
    }

    // Entries as bsdtar orders them (a directory's subdirectories after all its files), as an archive without
    // directory entries has them, and a directory coming back after another: every directory ends with its
    // archive mtime, although directories are finished as soon as the archive leaves them.
    [Fact]
    public async Task DirectoryTimesHoldWhateverTheEntryOrder()
    {
        using var t = new TempDirectory();
        var ms = new MemoryStream();
        using (var w = new PaxArchiveWriter(ms, 64 * 1024))
        {
            async Task Dir(string name, long sec)
            {
                w.BeginRecords();
                await w.WriteHeaderAsync(name, '5', 0x1ED, 0, 0, 0, sec, 5, null, 0, 0, default);
            }
            async Task FileEntry(string name)
            {
                w.BeginRecords();
                await w.WriteHeaderAsync(name, '0', 0x1A4, 0, 0, 1, 1_600_000_000, 0, null, 0, 0, default);
                await w.WriteBytesAsync(new byte[] { (byte)'x' }, default);
                await w.PadAsync(1, default);
            }
            await Dir("a/", 1_000_000_001);
            await Dir("b/", 1_000_000_002);
            await FileEntry("a/x");          // back into a, after b
            await Dir("a/c/", 1_000_000_003);
            await FileEntry("b/y");          // back into b, after a/c
            await FileEntry("a/c/z");
            await FileEntry("d/e/f");        // d and d/e never listed
            await Dir("d/", 1_000_000_004);  // listed after its contents
            await w.FinishAsync(default);
        }
        ms.Position = 0;
        string dst = t.Sub("dst");
        await new TarTreeSink(new TarTreeSinkOptions { Target = dst, PreserveOwnership = false }).ConsumeAsync(ms, default);

        foreach ((string dir, long sec) in (ReadOnlySpan<(string, long)>)[("a", 1_000_000_001), ("b", 1_000_000_002), ("a/c", 1_000_000_003), ("d", 1_000_000_004)])
        {
            FileStatus st = Posix.LStat(Path.Combine(dst, dir));
            Assert.True(st.MtimeSec == sec && st.MtimeNsec == 5, $"{dir}: mtime {st.MtimeSec}.{st.MtimeNsec:D9}, archive says {sec}.000000005");
        }
        Assert.Equal("x", File.ReadAllText(Path.Combine(dst, "a/c/z")));
    }
}
