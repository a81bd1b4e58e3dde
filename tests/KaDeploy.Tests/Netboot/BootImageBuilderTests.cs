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
}
