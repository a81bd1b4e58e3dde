using KaDeploy.Install;

namespace KaDeploy.Tests.Install;

public class LayoutTests
{
    private const string Original = """
        # the original's small language, with mount points
        table gpt
        bios_grub 1
        efi 256 /boot/efi
        linux 512M /boot label=boot
        swap 300
        linux fill / fs=xfs label=root options=noatime
        """;

    private static DiskLayout Valid(string text)
    {
        var l = LayoutFile.Parse(text, "test.layout");
        LayoutValidator.Validate(l);
        return l;
    }

    private static string Error(string text) =>
        Assert.Throws<KaDeployException>(() => Valid(text)).Message;

    [Fact]
    public void Small_language_reads_types_sizes_mount_points_and_keys()
    {
        var l = Valid(Original);
        Assert.Equal("gpt", l.Table);
        Assert.Equal(5, l.Partitions.Count);
        var (bios, efi, boot, swap, root) = (l.Partitions[0], l.Partitions[1], l.Partitions[2], l.Partitions[3], l.Partitions[4]);
        Assert.Equal(PartitionRole.BiosGrub, bios.Role);
        Assert.Equal(1L << 20, bios.SizeBytes);
        Assert.Equal(("vfat", "/boot/efi", 256L << 20), (efi.FileSystem, efi.MountPoint, efi.SizeBytes));
        Assert.Equal(("ext4", "boot", 512L << 20), (boot.FileSystem, boot.Label, boot.SizeBytes));
        Assert.Equal((PartitionRole.Swap, 300L << 20), (swap.Role, swap.SizeBytes));
        Assert.True(root.Fill);
        Assert.Equal(("xfs", "root", "noatime", "/"), (root.FileSystem, root.Label, root.MountOptions, root.MountPoint));
    }

    [Fact]
    public void Toml_form_reads_the_same_layout()
    {
        var l = LayoutFile.ParseToml("""
            table = "gpt"
            [[partition]]
            type = "bios_grub"
            size = 1
            [[partition]]
            type = "efi"
            size = "256M"
            mount = "/boot/efi"
            [[partition]]
            type = "linux"
            size = "512M"
            mount = "/boot"
            label = "boot"
            [[partition]]
            type = "swap"
            size = 300
            [[partition]]
            type = "linux"
            size = "fill"
            mount = "/"
            fs = "xfs"
            label = "root"
            options = "noatime"
            """);
        LayoutValidator.Validate(l);
        var small = Valid(Original);
        Assert.Equal(small.Partitions.Select(p => p.ToString()), l.Partitions.Select(p => p.ToString()));
        Assert.Equal(small.Partitions.Select(p => (p.Label, p.MountOptions)), l.Partitions.Select(p => (p.Label, p.MountOptions)));
    }

    [Fact]
    public void Toml_syntax_errors_and_unknown_keys_are_one_line()
    {
        var e = Assert.Throws<KaDeployException>(() => LayoutFile.ParseToml("table = \n[[partition]]", "x.toml"));
        Assert.StartsWith("x.toml:", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Contains("unknown key 'disk'", Assert.Throws<KaDeployException>(() => LayoutFile.ParseToml("disk = 1", "x.toml")).Message);
    }

    [Fact]
    public void Layout_file_errors_are_one_line_naming_the_line()
    {
        Assert.Equal("test.layout:2: unknown partition type 'ntfs' (expected linux, swap, efi, bios_grub)", Error("linux fill /\nntfs 100 /win"));
        Assert.StartsWith("layout: two fill partitions (test.layout:1 and test.layout:2)", Error("linux fill /\nlinux fill /home"));
        Assert.Equal("layout: no partition is mounted at /", Error("linux 100 /home\nswap 100"));
        Assert.Contains("test.layout:2: partition 2 (start 50 MiB) overlaps partition 1 (1..101 MiB)", Error("linux 100 / start=1M\nlinux 100 /var start=50M"));
        Assert.Contains("mount point /boot overlaps test.layout:2", Error("linux fill /\nlinux 100 /boot\nlinux 100 /boot"));
        Assert.Contains("bad size unit in '12X'", Error("linux 12X /"));
        Assert.Contains("unknown file system 'zfs'", Error("linux fill / fs=zfs"));
        Assert.Contains("percentages add up to 120%", Error("linux 60% /\nlinux 60% /home"));
        Assert.Contains("logical partitions are not supported", Error("table dos\nlinux 100 /\nlogical linux fill /home"));
    }

    [Fact]
    public void A_larger_disk_grows_the_fill_partition_and_fixed_ones_keep_their_size()
    {
        var l = Valid(Original);
        var small = LayoutPlanner.Plan(l, "/dev/sdz", 4L << 30);
        var large = LayoutPlanner.Plan(l, "/dev/sdz", 40L << 30);
        for (int i = 0; i < 4; i++) Assert.Equal(small[i].SizeBytes, large[i].SizeBytes);
        Assert.Equal((40L << 30) - (4L << 30), large[4].SizeBytes - small[4].SizeBytes);
        Assert.Equal("/dev/sdz5", large[4].Device);
        // Aligned, in order, no overlap, inside the disk (GPT backup at the end).
        long end = 0;
        foreach (var p in large)
        {
            Assert.Equal(0, p.StartSector % 2048);
            Assert.True(p.StartSector >= Math.Max(end, 2048));
            end = p.StartSector + p.SizeSectors;
        }
        Assert.True(end <= (40L << 30) / 512 - 34);
    }

    [Fact]
    public void A_disk_too_small_is_refused_with_what_it_needs()
    {
        var l = Valid("linux 512 /boot\nswap 1G\nlinux fill /");
        l.Partitions[2].MinBytes = 2L << 30;
        var e = Assert.Throws<KaDeployException>(() => LayoutPlanner.Plan(l, "/dev/loop9", 3L << 30));
        Assert.Equal("disk /dev/loop9 is too small: 3072 MiB, the layout needs at least 3586 MiB (with 2048 MiB for the fill partition /)", e.Message);
        Assert.Equal(3, LayoutPlanner.Plan(l, "/dev/loop9", 4L << 30).Count);
    }

    [Fact]
    public void Percent_sizes_are_of_the_disk_and_partition_names_follow_the_kernel()
    {
        var l = Valid("linux 25% /\nlinux fill /home");
        var p = LayoutPlanner.Plan(l, "/dev/nvme0n1", 100L << 30);
        Assert.InRange(p[0].SizeBytes, (25L << 30) - (2 << 20), 25L << 30);
        Assert.Equal("/dev/nvme0n1p1", p[0].Device);
        Assert.Equal("/dev/sda2", LayoutPlanner.PartitionDevice("/dev/sda", 2));
    }

    [Fact]
    public void Sfdisk_script_and_mkfs_commands_carry_the_new_identities_and_labels()
    {
        var l = Valid(Original);
        int n = 0;
        var planned = LayoutPlanner.Plan(l, "/dev/sdz", 8L << 30, () => $"00000000-0000-4000-8000-{++n:D12}");
        string script = LayoutPlanner.SfdiskScript(l, planned, "11111111-2222-3333-4444-555555555555");
        Assert.Contains("label: gpt\n", script);
        Assert.Contains("type=21686148-6449-6E6F-744E-656564454649", script);
        Assert.Contains("type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B", script);
        Assert.Contains($"uuid={planned[4].NewPartUuid}", script);
        Assert.Equal(["mkfs.xfs", "-f", "-q", "-m", $"uuid={planned[4].NewUuid}", "-L", "root", "/dev/sdz5"], LayoutPlanner.MkfsCommand(planned[4])!);
        Assert.Equal(["mkswap", "-U", planned[3].NewUuid, "/dev/sdz4"], LayoutPlanner.MkfsCommand(planned[3])!);
        Assert.Equal("mkfs.vfat", LayoutPlanner.MkfsCommand(planned[1])![0]);
        Assert.Matches("^[0-9A-F]{4}-[0-9A-F]{4}$", planned[1].NewUuid);   // a vfat volume id
        Assert.Null(LayoutPlanner.MkfsCommand(planned[0]));                // bios_grub: no file system
        Assert.Equal(5, planned.Select(p => p.NewPartUuid).Distinct().Count());
    }

    [Fact]
    public void Manifest_round_trips_through_json_and_is_validated_on_arrival()
    {
        var m = new InstallManifest { Session = "s", Layout = Valid(Original), Nodes = NodeList.Parse("n1 aa:bb:cc:dd:ee:ff 10.0.0.1/24 k=v"), BiosBoot = true };
        m.Parts.Add(new ManifestPart { Index = 1, Kind = KaDeploy.Payloads.Parts.PartKind.Tree, Name = "/", Partition = 5, MountPoint = "/" });
        var back = InstallManifest.FromJson(m.ToJson());
        Assert.Equal(m.Layout.Partitions.Select(p => p.ToString()), back.Layout.Partitions.Select(p => p.ToString()));
        Assert.Equal("v", back.Nodes[0].Vars["k"]);
        Assert.Equal("/", back.Parts[0].MountPoint);
        back.Layout.Partitions.RemoveAt(4);
        Assert.Contains("no partition is mounted at /", Assert.Throws<KaDeployException>(() => InstallManifest.FromJson(back.ToJson())).Message);
        Assert.Contains("install manifest", Assert.Throws<KaDeployException>(() => InstallManifest.FromJson("{\"Version\":"u8)).Message);
    }
}
