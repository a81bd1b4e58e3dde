using System.Formats.Tar;
using KaDeploy.Payloads.Tar;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Payloads.Tar;

public class TarTreeSourceTests
{
    [Fact]
    public async Task WritesEntriesInOrderWithNanosecondMtime()
    {
        using var t = new TempDirectory();
        Directory.CreateDirectory(t.Sub("b/c"));
        File.WriteAllText(t.Sub("a.txt"), "hello");
        File.WriteAllText(t.Sub("b/c/d"), "x");
        File.CreateSymbolicLink(t.Sub("b/link"), "/etc/passwd");
        KaDeploy.Platform.Posix.SetTimes(t.Sub("a.txt"), 1_700_000_000, 123_456_789);

        var ms = new MemoryStream();
        await new TarTreeSource(new TarTreeSourceOptions { Root = t.Path }).WriteToAsync(ms, default);
        ms.Position = 0;
        var names = new List<string>();
        string? mtime = null;
        using var r = new TarReader(ms);
        while (r.GetNextEntry() is TarEntry e)
        {
            names.Add(e.Name);
            if (e.Name == "a.txt") mtime = ((PaxTarEntry)e).ExtendedAttributes["mtime"];
            if (e.Name == "b/link") Assert.Equal("/etc/passwd", e.LinkName);
        }
        Assert.Equal(["./", "a.txt", "b/", "b/c/", "b/c/d", "b/link"], names);
        Assert.Equal("1700000000.123456789", mtime);
    }

    private static async Task<List<TarEntry>> ListAsync(TarTreeSourceOptions options)
    {
        var ms = new MemoryStream();
        await new TarTreeSource(options).WriteToAsync(ms, default);
        ms.Position = 0;
        var entries = new List<TarEntry>();
        using var r = new TarReader(ms);
        while (r.GetNextEntry(copyData: true) is TarEntry e) entries.Add(e);
        return entries;
    }

    [SkippableTheory]
    [InlineData(true)]
    [InlineData(false)] // the llistxattr-by-path fallback of kernels before 6.13
    public async Task EmptyFilesDirectoriesAndSymlinksKeepTheirXattrs(bool xattrAt)
    {
        // An empty file is archived without being opened (issue 14), so its xattrs come from listxattrat on its name.
        using var t = new TempDirectory();
        Directory.CreateDirectory(t.Sub("d"));
        File.WriteAllBytes(t.Sub("d/empty"), []);
        File.WriteAllText(t.Sub("d/full"), "data");
        File.CreateSymbolicLink(t.Sub("d/link"), "empty");
        byte[] value = "a=b c"u8.ToArray();
        int dfd = KaDeploy.Platform.PosixAt.OpenDirectoryPath(System.Text.Encoding.UTF8.GetBytes(t.Sub("d")), followFinal: true, out _);
        try
        {
            int rc = KaDeploy.Platform.PosixAt.SetXattrAt(dfd, "empty"u8.ToArray(), "user.k"u8.ToArray(), value);
            Skip.If(rc == KaDeploy.Platform.LinuxNative.EOPNOTSUPP, "no user xattrs on this file system");
            Assert.Equal(0, rc);
            Assert.Equal(0, KaDeploy.Platform.PosixAt.SetXattrAt(dfd, "full"u8.ToArray(), "user.k"u8.ToArray(), value));
            int top = KaDeploy.Platform.PosixAt.OpenDirectoryPath(System.Text.Encoding.UTF8.GetBytes(t.Path), followFinal: true, out _);
            Assert.Equal(0, KaDeploy.Platform.PosixAt.SetXattrAt(top, "d"u8.ToArray(), "user.k"u8.ToArray(), value));
            KaDeploy.Platform.LinuxNative.Close(top);
            bool linkXattr = Environment.IsPrivilegedProcess // user.* is refused on symlinks; trusted.* needs root
                && KaDeploy.Platform.PosixAt.SetXattrAt(dfd, "link"u8.ToArray(), "trusted.k"u8.ToArray(), value) == 0;

            bool before = KaDeploy.Platform.PosixAt.UseXattrAt;
            KaDeploy.Platform.PosixAt.UseXattrAt = xattrAt;
            List<TarEntry> entries;
            try
            {
                entries = await ListAsync(new TarTreeSourceOptions { Root = t.Path });
            }
            finally
            {
                KaDeploy.Platform.PosixAt.UseXattrAt = before;
            }
            foreach (string name in (string[])["d/", "d/empty", "d/full"])
            {
                var pax = (PaxTarEntry)entries.Single(e => e.Name == name);
                Assert.Equal("a=b c", pax.ExtendedAttributes.GetValueOrDefault("SCHILY.xattr.user.k"));
            }
            Assert.Equal(0, entries.Single(e => e.Name == "d/empty").Length);
            if (linkXattr) Assert.True(((PaxTarEntry)entries.Single(e => e.Name == "d/link")).ExtendedAttributes.ContainsKey("SCHILY.xattr.trusted.k"));
        }
        finally
        {
            KaDeploy.Platform.LinuxNative.Close(dfd);
        }
    }

    [SkippableFact]
    public async Task FileLongerThanItsStatIsCutToTheHeaderSizeWithAWarning()
    {
        // procfs files stat as 0 bytes but have content: the archive must still hold exactly the stat size.
        const string dir = "/proc/sys/kernel/random";
        Skip.IfNot(File.Exists(dir + "/boot_id"), "no procfs");
        var warnings = new List<string>();
        List<TarEntry> entries = await ListAsync(new TarTreeSourceOptions { Root = dir, Warn = warnings.Add });
        TarEntry bootId = entries.Single(e => e.Name == "boot_id");
        Assert.Equal(0, bootId.Length);
        Assert.Contains($"{dir}/boot_id grew while read; archived its first 0 bytes", warnings);
    }

    [Fact]
    public async Task ADirectoryLargerThanOneReadOfItIsListedWhole()
    {
        // 3,000 names of 60 bytes: about 240 KB of directory records, several getdents64 calls of 32 KiB.
        using var t = new TempDirectory();
        Directory.CreateDirectory(t.Sub("big"));
        var expected = new List<string> { "./", "big/" };
        for (int i = 0; i < 3000; i++)
        {
            string name = $"{i:D5}-" + new string('n', 54);
            File.WriteAllText(t.Sub("big/" + name), "");
            expected.Add("big/" + name);
        }
        List<TarEntry> entries = await ListAsync(new TarTreeSourceOptions { Root = t.Path });
        Assert.Equal(expected, entries.Select(e => e.Name));
    }

    [SkippableFact]
    public async Task AProcfsMountedInsideTheTreeIsReadAsGeneratedFiles()
    {
        // The walker asks statfs only where the device changes: a procfs below an ordinary directory must still be
        // known as one, or its files (which stat as 0 bytes) would be archived unread, without a word.
        Skip.IfNot(Environment.IsPrivilegedProcess, "needs root to bind-mount");
        const string random = "/proc/sys/kernel/random";
        Skip.IfNot(File.Exists(random + "/boot_id"), "no procfs");
        using var t = new TempDirectory();
        Directory.CreateDirectory(t.Sub("a/mnt"));
        File.WriteAllText(t.Sub("a/before"), "x");
        Skip.If(TempDirectory.Run("mount", "--bind", random, t.Sub("a/mnt")) != 0, "cannot bind-mount here");
        try
        {
            var warnings = new List<string>();
            List<TarEntry> entries = await ListAsync(new TarTreeSourceOptions { Root = t.Path, Warn = warnings.Add });
            Assert.Contains(entries, e => e.Name == "a/mnt/boot_id");
            Assert.Contains($"{t.Sub("a/mnt")}/boot_id grew while read; archived its first 0 bytes", warnings);
        }
        finally
        {
            TempDirectory.Run("umount", t.Sub("a/mnt"));
        }
    }

    [SkippableFact]
    public async Task OneFileSystemKeepsTheMountPointButNotItsContents()
    {
        Skip.IfNot(Environment.IsPrivilegedProcess, "needs root to mount a tmpfs");
        using var t = new TempDirectory();
        Directory.CreateDirectory(t.Sub("mnt"));
        File.WriteAllText(t.Sub("before"), "x");
        Skip.If(TempDirectory.Run("mount", "-t", "tmpfs", "-o", "size=1m", "kad-test", t.Sub("mnt")) != 0, "cannot mount tmpfs here");
        try
        {
            File.WriteAllText(t.Sub("mnt/inside"), "other file system");
            List<TarEntry> one = await ListAsync(new TarTreeSourceOptions { Root = t.Path, OneFileSystem = true });
            Assert.Equal(["./", "before", "mnt/"], one.Select(e => e.Name));
            List<TarEntry> all = await ListAsync(new TarTreeSourceOptions { Root = t.Path });
            Assert.Equal(["./", "before", "mnt/", "mnt/inside"], all.Select(e => e.Name));
        }
        finally
        {
            TempDirectory.Run("umount", t.Sub("mnt"));
        }
    }

    [Fact]
    public void DefaultExclusionsKeepDirectoriesButNotContents()
    {
        var ex = new PathExclusions("/", TarTreeSource.DefaultExclusions("/", "/mnt/target"));
        Assert.False(ex.IsExcluded("proc"));
        Assert.True(ex.IsExcluded("proc/1"));
        Assert.True(ex.IsExcluded("tmp/.X11-unix"));
        Assert.True(ex.IsExcluded("mnt/target"));
        Assert.False(ex.IsExcluded("mnt"));
        Assert.False(ex.IsExcluded("procfoo"));
    }

    [Theory]
    [InlineData("*.log", "a.log", true)]
    [InlineData("*.log", "d/a.log", false)]
    [InlineData("**/*.log", "d/e/a.log", true)]
    [InlineData("var/cache/?pt", "var/cache/apt", true)]
    [InlineData("[ab]x", "bx", true)]
    [InlineData("[!ab]x", "bx", false)]
    public void GlobMatches(string pattern, string path, bool expected) =>
        Assert.Equal(expected, PathExclusions.Glob(pattern, path));
}

public class TarTreeEstimateTests
{
    [Fact]
    public async Task TheSizeEstimateIsWithinAFewPerCentOfTheArchive()
    {
        using var dir = new KaDeploy.Tests.TestSupport.TempDirectory("kad-estimate");
        string src = dir.Sub("src");
        SampleTree.Create(src);
        for (int i = 0; i < 200; i++) File.WriteAllBytes(Path.Combine(src, $"f{i}"), new byte[i * 997]);
        var source = new KaDeploy.Payloads.Tar.TarTreeSource(new KaDeploy.Payloads.Tar.TarTreeSourceOptions { Root = src });
        long estimate = await source.EstimateLengthAsync(default);
        var counter = new MemoryStream();
        await source.WriteToAsync(counter, default);
        double ratio = (double)estimate / counter.Length;
        Assert.InRange(ratio, 0.9, 1.1);
    }
}
