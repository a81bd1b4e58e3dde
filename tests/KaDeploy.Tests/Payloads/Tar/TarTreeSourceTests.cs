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
        Assert.Equal(["a.txt", "b/", "b/c/", "b/c/d", "b/link"], names);
        Assert.Equal("1700000000.123456789", mtime);
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
