using KaDeploy.Install;
using KaDeploy.Tests.Payloads.Block;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Install;

public class DiskGuardTests
{
    [Fact]
    public void Not_a_block_device_is_refused()
    {
        using var d = new TempDirectory("kdguard");
        File.WriteAllText(d.File("disk.img"), "x");
        Assert.Equal($"{d.File("disk.img")} is not a block device", Assert.Throws<KaDeployException>(() => DiskGuard.Check(d.File("disk.img"))).Message);
        Assert.Equal("disk /dev/does-not-exist does not exist", Assert.Throws<KaDeployException>(() => DiskGuard.Check("/dev/does-not-exist")).Message);
    }

    [SkippableFact]
    public void A_disk_with_a_mounted_partition_and_a_partition_itself_are_refused_and_a_free_disk_is_accepted()
    {
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        Skip.If(TempDirectory.Run("partx", "--version") != 0 || TempDirectory.Run("sfdisk", "--version") != 0, "partx/sfdisk (util-linux, fdisk) missing");
        using var d = new TempDirectory("kdguard");
        using var loop = LoopDevice.Attach(d, "disk.img", new byte[64 << 20]);
        string mnt = d.Sub("mnt");
        Directory.CreateDirectory(mnt);
        try
        {
            Assert.Equal(new TargetDisk(loop.Device, Path.GetFileName(loop.Device), 64 << 20), DiskGuard.Check(loop.Device));
            PayloadTestKit.Run("sh", "-c", $"printf 'label: gpt\\nsize=32MiB, type=L\\n' | sfdisk -q {loop.Device}; partx -a {loop.Device} || true");
            string part = loop.Device + "p1";
            PayloadTestKit.Run("mkfs.ext4", "-q", part);
            Assert.Equal($"{part} is a partition; --install takes a whole disk", Assert.Throws<KaDeployException>(() => DiskGuard.Check(part)).Message);
            PayloadTestKit.Run("mount", part, mnt);
            var e = Assert.Throws<KaDeployException>(() => DiskGuard.Check(loop.Device));
            Assert.Equal($"refusing to write {loop.Device}: {part} is mounted on {mnt}", e.Message);
        }
        finally
        {
            TempDirectory.Run("umount", mnt);
            TempDirectory.Run("partx", "-d", loop.Device);
        }
    }
}
