using KaDeploy.Netboot;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Netboot;

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class BootImageBuilderTests
{
    [SkippableFact]
    public void MissingKernelPackageIsRefusedWithWhatToDo()
    {
        Skip.If(ExternalTool.Which("apt-cache") is null, "apt-cache not installed (not a Debian system)");
        // The builder checks busybox before the kernel package; the host's must be the static one for it to get there.
        Skip.If(!File.Exists("/bin/busybox") || ExternalTool.Run("ldd", ["/bin/busybox"]).Status == 0, "static busybox not installed (apt-get install busybox-static)");
        using var dir = new TempDirectory("nbimg");
        var e = Assert.Throws<KaDeployException>(() => BootImageBuilder.Build(new BootImageOptions
        {
            KernelPackage = "linux-image-kdtbn-no-such-kernel", CacheDirectory = dir.Sub("cache"), ClientBinary = "/bin/sh",
        }));
        Assert.StartsWith("kernel package 'linux-image-kdtbn-no-such-kernel' not found (", e.Message);
        Assert.Contains("apt-cache search linux-image", e.Message);
        Assert.False(Directory.Exists(dir.Sub("cache/images")));
    }

    [Fact]
    public void TheCacheKeepsTheMostRecentlyUsedImagesAndTheCurrentOne()
    {
        using var dir = new TempDirectory("nbprune");
        string images = dir.Sub("images");
        var t0 = new DateTime(2026, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        for (int i = 0; i < 6; i++)
        {
            Directory.CreateDirectory(Path.Combine(images, $"img{i}"));
            File.WriteAllText(Path.Combine(images, $"img{i}", "initrd.img"), "x");
            Directory.SetLastWriteTimeUtc(Path.Combine(images, $"img{i}"), t0.AddHours(i)); // img5 used last
        }
        var log = new StringWriter();
        // img0 is the oldest but the one in use now: it stays, with the 3 most recently used others.
        BootImageBuilder.PruneImages(images, Path.Combine(images, "img0"), 4, log);
        Assert.Equal(["img0", "img3", "img4", "img5"], Directory.GetDirectories(images).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Contains("removed " + Path.Combine(images, "img1"), log.ToString());
        BootImageBuilder.PruneImages(images, Path.Combine(images, "img5"), 1, TextWriter.Null);
        Assert.Equal(["img5"], Directory.GetDirectories(images).Select(Path.GetFileName));
    }
}
