using KaDeploy.Install;
using KaDeploy.Payloads.Parts;
using KaDeploy.Payloads.Tar;
using KaDeploy.Tests.Payloads.Block;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Install;

/// <summary>
/// The installer end to end on real loop disks (root only): a two-file-system layout, the multi-part stream of two
/// trees, the real sfdisk/mkfs/mount/extract/configure/unmount; then the disk is read back. No boot loader (the
/// sample tree has none; testbed/install-e2e boots real clones in qemu).
/// </summary>
public class InstallerLoopTests
{
    private const string OldRoot = "11111111-aaaa-4bbb-8ccc-000000000001";
    private const string OldHome = "11111111-aaaa-4bbb-8ccc-000000000002";

    private static string? WhyUnavailable()
    {
        if (LoopDevice.WhyUnavailable() is { } why) return why;
        foreach (var tool in (string[])["sfdisk", "partx", "wipefs", "mkfs.ext4", "blkid"])
            if (TempDirectory.Run(tool, "--version") != 0 && TempDirectory.Run(tool, "-V") != 0) return $"{tool} missing";
        return null;
    }

    private static (InstallManifest Manifest, MultiPartSource Source) Session(TempDirectory d)
    {
        string root = d.Sub("src");
        Directory.CreateDirectory(Path.Combine(root, "etc/ssh"));
        Directory.CreateDirectory(Path.Combine(root, "usr/share"));
        Directory.CreateDirectory(Path.Combine(root, "home"));
        File.WriteAllText(Path.Combine(root, "etc/fstab"), $"UUID={OldRoot} / ext4 errors=remount-ro 0 1\nUUID={OldHome} /home ext4 defaults 0 2\n");
        File.WriteAllText(Path.Combine(root, "etc/hostname"), "source\n");
        File.WriteAllText(Path.Combine(root, "etc/machine-id"), "00000000000000000000000000000000\n");
        File.WriteAllText(Path.Combine(root, "etc/ssh/ssh_host_ed25519_key"), "the source's secret");
        File.WriteAllBytes(Path.Combine(root, "usr/share/data"), Enumerable.Range(0, 3 << 20).Select(i => (byte)(i * 7)).ToArray());
        string home = d.Sub("home");
        Directory.CreateDirectory(Path.Combine(home, "alice"));
        File.WriteAllText(Path.Combine(home, "alice/notes"), "hello");

        var layout = LayoutFile.Parse("linux 48M / label=kroot\nlinux fill /home label=khome");
        layout.Partitions[0].SourceUuid = OldRoot;
        layout.Partitions[1].SourceUuid = OldHome;
        layout.Partitions[1].MinBytes = 16 << 20;
        // A partition copied block by block between them (what --raw-partition sends): data at 0 and 5 MiB, zeros elsewhere.
        layout.Partitions.Insert(1, new PartitionSpec { Role = PartitionRole.Raw, SizeBytes = 8 << 20, Origin = "raw" });
        layout.Partitions[1].Number = 2;
        layout.Partitions[2].Number = 3;
        var raw = new byte[8 << 20];
        Random.Shared.NextBytes(raw.AsSpan(0, 70_000));
        Random.Shared.NextBytes(raw.AsSpan(5 << 20, 4096));
        File.WriteAllBytes(d.Sub("raw.img"), raw);
        LayoutValidator.Validate(layout);
        var m = new InstallManifest { Session = "t", Layout = layout, Nodes = NodeList.Parse("n1 198.18.1.9/24 rack=x\nn2") };
        m.Parts.Add(new ManifestPart { Index = 1, Kind = PartKind.Tree, Name = "/", Partition = 1, MountPoint = "/" });
        m.Parts.Add(new ManifestPart { Index = 2, Kind = PartKind.Tree, Name = "/home", Partition = 3, MountPoint = "/home" });
        m.Parts.Add(new ManifestPart { Index = 3, Kind = PartKind.BlockMap, Name = "partition 2", Partition = 2 });
        var src = new MultiPartSource(
        [
            new PartSource(PartKind.Manifest, "manifest", new BufferSource(m.ToJson(), "manifest")),
            new PartSource(PartKind.Tree, "/", new TarTreeSource(new TarTreeSourceOptions { Root = root, Excludes = [root + "/home/*"] })),
            new PartSource(PartKind.Tree, "/home", new TarTreeSource(new TarTreeSourceOptions { Root = home })),
            new PartSource(PartKind.BlockMap, "partition 2", new KaDeploy.Payloads.Block.BlockDeviceSource(d.Sub("raw.img"))),
        ]);
        return (m, src);
    }

    private static async Task<MemoryStream> StreamAsync(MultiPartSource src)
    {
        var ms = new MemoryStream();
        await src.WriteToAsync(ms, CancellationToken.None);
        ms.Position = 0;
        return ms;
    }

    private static bool AllZero(string file) => File.ReadAllBytes(file).All(b => b == 0);

    [SkippableFact]
    public async Task A_node_is_partitioned_formatted_filled_and_configured_and_fstab_names_its_own_file_systems()
    {
        string? why = WhyUnavailable();
        Skip.If(why is not null, why);
        using var d = new TempDirectory("kdinst");
        var (_, src) = Session(d);
        using var disk = LoopDevice.Attach(d, "disk.img", new byte[160 << 20]);
        var log = new List<string>();
        var sink = new InstallerSink(new NodeInstallOptions
        {
            Disk = disk.Device, NodeName = "n1", Macs = [], StagingParent = d.Sub("staging"), Log = log.Add, Warn = log.Add,
        });
        string mnt = d.Sub("check");
        Directory.CreateDirectory(mnt);
        try
        {
            await sink.ConsumeAsync(await StreamAsync(src), CancellationToken.None);
            Assert.Contains(log, l => l.StartsWith("part 1/3 /: ", StringComparison.Ordinal) && l.EndsWith("SHA-256 verified", StringComparison.Ordinal));
            Assert.Contains(log, l => l.StartsWith("phases: partition", StringComparison.Ordinal));
            string p1 = disk.Device + "p1", p2 = disk.Device + "p3";
            string uuid1 = PayloadTestKit.Run("blkid", "-s", "UUID", "-o", "value", p1);
            string uuid2 = PayloadTestKit.Run("blkid", "-s", "UUID", "-o", "value", p2);
            Assert.Equal("khome", PayloadTestKit.Run("blkid", "-s", "LABEL", "-o", "value", p2));
            Assert.Equal(sink.Installer!.Planned[0].NewUuid, uuid1);
            PayloadTestKit.Run("mount", p1, mnt);
            PayloadTestKit.Run("mount", p2, Path.Combine(mnt, "home"));
            Assert.Equal($"UUID={uuid1} / ext4 errors=remount-ro 0 1\nUUID={uuid2} /home ext4 defaults 0 2\n", File.ReadAllText(Path.Combine(mnt, "etc/fstab")));
            Assert.Equal("n1\n", File.ReadAllText(Path.Combine(mnt, "etc/hostname")));
            Assert.Contains("198.18.1.9\tn1", File.ReadAllText(Path.Combine(mnt, "etc/hosts")));
            Assert.Equal(sink.Installer.MachineId + "\n", File.ReadAllText(Path.Combine(mnt, "etc/machine-id")));
            Assert.False(File.Exists(Path.Combine(mnt, "etc/ssh/ssh_host_ed25519_key")));
            Assert.Equal(File.ReadAllBytes(d.Sub("src/usr/share/data")), File.ReadAllBytes(Path.Combine(mnt, "usr/share/data")));
            Assert.Equal("hello", File.ReadAllText(Path.Combine(mnt, "home/alice/notes")));
            // The fill partition took the rest of the 160 MiB disk.
            Assert.InRange(sink.Installer.Planned[2].SizeBytes, 95L << 20, 103L << 20);
            // The raw partition holds the source's bytes, its zero blocks included.
            using (var part = File.OpenRead(disk.Device + "p2"))
            {
                var back = new byte[8 << 20];
                part.ReadExactly(back);
                Assert.True(back.AsSpan().SequenceEqual(File.ReadAllBytes(d.Sub("raw.img"))), "raw partition differs from its source");
            }
            // Nothing is left mounted by the installer.
            Assert.DoesNotContain(d.Sub("staging"), File.ReadAllText("/proc/self/mountinfo"));
        }
        finally
        {
            TempDirectory.Run("umount", Path.Combine(mnt, "home"));
            TempDirectory.Run("umount", mnt);
            TempDirectory.Run("partx", "-d", disk.Device);
        }
    }

    [SkippableFact]
    public async Task Dry_run_a_disk_too_small_and_a_stranger_write_nothing()
    {
        string? why = WhyUnavailable();
        Skip.If(why is not null, why);
        using var d = new TempDirectory("kdinst");
        var (_, src) = Session(d);
        using var disk = LoopDevice.Attach(d, "disk.img", new byte[160 << 20]);
        var log = new List<string>();
        var dry = new InstallerSink(new NodeInstallOptions { Disk = disk.Device, NodeName = "n2", Macs = [], DryRun = true, Log = log.Add });
        await dry.ConsumeAsync(await StreamAsync(src), CancellationToken.None);
        Assert.Contains(log, l => l.Contains("sfdisk --quiet", StringComparison.Ordinal) && l.Contains("mkfs.ext4 -F -q -U", StringComparison.Ordinal));
        Assert.Contains(log, l => l.StartsWith("dry run: every part received and verified", StringComparison.Ordinal));
        Assert.True(AllZero(disk.BackingFile));

        var stranger = new InstallerSink(new NodeInstallOptions { Disk = disk.Device, NodeName = "n9", Macs = ["52:54:00:99:99:99"] });
        var e = await Assert.ThrowsAsync<KaDeployException>(async () => await stranger.ConsumeAsync(await StreamAsync(src), CancellationToken.None));
        Assert.Equal("node 'n9' (MAC 52:54:00:99:99:99) is not in the node list; nothing was written", e.Message);
        Assert.True(AllZero(disk.BackingFile));

        using var small = LoopDevice.Attach(d, "small.img", new byte[48 << 20]);
        var tooSmall = new InstallerSink(new NodeInstallOptions { Disk = small.Device, NodeName = "n1", Macs = [] });
        e = await Assert.ThrowsAsync<KaDeployException>(async () => await tooSmall.ConsumeAsync(await StreamAsync(src), CancellationToken.None));
        Assert.StartsWith($"disk {small.Device} is too small: 48 MiB, the layout needs at least 74 MiB", e.Message);
        Assert.True(AllZero(small.BackingFile));
    }
}
