using KaDeploy.Install;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Install;

public class NodeConfiguratorTests
{
    private const string OldRoot = "0d6c4a4e-1111-4e3b-9f52-7f0c1a2b3c4d";
    private const string OldBoot = "8a1b2c3d-2222-4d5e-8f90-a1b2c3d4e5f6";
    private const string OldSwap = "5f4e3d2c-3333-4b0a-9c8d-7e6f5a4b3c2d";
    private const string OldEsp = "A1B2-C3D4";

    private static (InstallManifest, IReadOnlyList<PlannedPartition>) Layout()
    {
        var layout = LayoutFile.Parse("bios_grub 1\nefi 64 /boot/efi\nlinux 256 /boot\nswap 256\nlinux fill /");
        layout.Partitions[1].SourceUuid = OldEsp;
        layout.Partitions[2].SourceUuid = OldBoot;
        layout.Partitions[3].SourceUuid = OldSwap;
        layout.Partitions[4].SourceUuid = OldRoot;
        var m = new InstallManifest { Layout = layout, SourceHostname = "source" };
        return (m, LayoutPlanner.Plan(layout, "/dev/vdz", 4L << 30));
    }

    private static TempDirectory Clone()
    {
        var d = new TempDirectory("kdcfg");
        foreach (var dir in (string[])["etc/ssh", "etc/default", "etc/initramfs-tools/conf.d", "etc/systemd/network", "etc/udev/rules.d", "var/lib/dhcp", "var/lib/systemd"])
            Directory.CreateDirectory(d.Sub(dir));
        File.WriteAllText(d.Sub("etc/fstab"), $"""
            # <file system> <mount point> <type> <options> <dump> <pass>
            UUID={OldRoot} / ext4 errors=remount-ro 0 1
            UUID={OldBoot} /boot ext4 defaults 0 2
            UUID={OldEsp.ToLowerInvariant()} /boot/efi vfat umask=0077 0 1
            UUID={OldSwap} none swap sw 0 0
            tmpfs /tmp tmpfs defaults 0 0

            """);
        File.WriteAllText(d.Sub("etc/initramfs-tools/conf.d/resume"), $"RESUME=UUID={OldSwap}\n");
        File.WriteAllText(d.Sub("etc/default/grub"), $"GRUB_CMDLINE_LINUX=\"resume=UUID={OldSwap} quiet\"\n");
        File.WriteAllText(d.Sub("etc/hostname"), "source\n");
        File.WriteAllText(d.Sub("etc/hosts"), "127.0.0.1\tlocalhost\n127.0.1.1\tsource.example source\n::1 localhost ip6-localhost\n");
        File.WriteAllText(d.Sub("etc/machine-id"), "0123456789abcdef0123456789abcdef\n");
        File.WriteAllText(d.Sub("etc/ssh/ssh_host_ed25519_key"), "secret");
        File.WriteAllText(d.Sub("etc/ssh/ssh_host_ed25519_key.pub"), "pub");
        File.WriteAllText(d.Sub("etc/ssh/sshd_config"), "keep me");
        File.WriteAllText(d.Sub("etc/udev/rules.d/70-persistent-net.rules"), "old macs");
        File.WriteAllText(d.Sub("var/lib/dhcp/dhclient.eth0.leases"), "lease");
        File.WriteAllText(d.Sub("var/lib/systemd/random-seed"), "seed");
        return d;
    }

    [Fact]
    public void Fstab_resume_and_kernel_command_line_name_the_new_file_systems()
    {
        var (m, planned) = Layout();
        using var d = Clone();
        var node = NodeList.Parse("n7 52:54:00:00:00:07 198.18.1.7/24 gateway=198.18.1.1")[0];
        var changes = NodeConfigurator.Apply(d.Path, m, node, planned, "f".PadLeft(32, 'f'), _ => { });
        string fstab = File.ReadAllText(d.Sub("etc/fstab"));
        foreach (var old in (string[])[OldRoot, OldBoot, OldSwap, OldEsp])
            Assert.DoesNotContain(old, fstab, StringComparison.OrdinalIgnoreCase);
        Assert.Contains($"UUID={planned[4].NewUuid} / ext4 errors=remount-ro 0 1", fstab);
        Assert.Contains($"UUID={planned[2].NewUuid} /boot ext4 defaults 0 2", fstab);
        Assert.Contains($"UUID={planned[1].NewUuid} /boot/efi vfat umask=0077 0 1", fstab);
        Assert.Contains($"UUID={planned[3].NewUuid} none swap sw 0 0", fstab);
        Assert.Contains("tmpfs /tmp tmpfs defaults 0 0", fstab);
        Assert.Equal(6, fstab.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);   // nothing appended twice
        Assert.Equal($"RESUME=UUID={planned[3].NewUuid}\n", File.ReadAllText(d.Sub("etc/initramfs-tools/conf.d/resume")));
        Assert.Contains($"resume=UUID={planned[3].NewUuid}", File.ReadAllText(d.Sub("etc/default/grub")));
        Assert.Contains(changes, c => c.StartsWith("resume", StringComparison.Ordinal));
    }

    [Fact]
    public void Identity_is_the_nodes_and_nothing_secret_or_unique_is_kept()
    {
        var (m, planned) = Layout();
        using var d = Clone();
        var node = NodeList.Parse("n7 52:54:00:00:00:07 198.18.1.7/24 gateway=198.18.1.1 dns=198.18.1.1")[0];
        NodeConfigurator.Apply(d.Path, m, node, planned, "abcdef0123456789abcdef0123456789", _ => { });
        Assert.Equal("n7\n", File.ReadAllText(d.Sub("etc/hostname")));
        string hosts = File.ReadAllText(d.Sub("etc/hosts"));
        Assert.DoesNotContain("source", hosts);
        Assert.Contains("127.0.1.1\tn7\n", hosts);
        Assert.Contains("198.18.1.7\tn7\n", hosts);
        Assert.Contains("::1 localhost", hosts);
        Assert.Equal("abcdef0123456789abcdef0123456789\n", File.ReadAllText(d.Sub("etc/machine-id")));
        Assert.False(File.Exists(d.Sub("etc/ssh/ssh_host_ed25519_key")));
        Assert.False(File.Exists(d.Sub("etc/ssh/ssh_host_ed25519_key.pub")));
        Assert.True(File.Exists(d.Sub("etc/ssh/sshd_config")));
        Assert.False(File.Exists(d.Sub("etc/udev/rules.d/70-persistent-net.rules")));
        Assert.False(File.Exists(d.Sub("var/lib/dhcp/dhclient.eth0.leases")));
        Assert.False(File.Exists(d.Sub("var/lib/systemd/random-seed")));
        string net = File.ReadAllText(d.Sub("etc/systemd/network/10-ka-deploy.network"));
        Assert.Contains("MACAddress=52:54:00:00:00:07", net);
        Assert.Contains("Address=198.18.1.7/24", net);
        Assert.Contains("Gateway=198.18.1.1", net);
        Assert.Contains("DNS=198.18.1.1", net);
    }

    [Fact]
    public void A_layout_that_differs_from_the_source_still_gets_a_complete_fstab()
    {
        // The source had everything on one file system; the layout file adds /home and swap.
        var layout = LayoutFile.Parse("linux 1G /\nswap 256\nlinux fill /home fs=xfs");
        var planned = LayoutPlanner.Plan(layout, "/dev/vdz", 8L << 30);
        string fstab = NodeConfigurator.RewriteFstab("/dev/sda1 / ext4 defaults 0 1\n", planned);
        Assert.Contains($"UUID={planned[0].NewUuid} / ext4 defaults 0 1", fstab);
        Assert.Contains($"UUID={planned[1].NewUuid} none swap sw 0 0", fstab);
        Assert.Contains($"UUID={planned[2].NewUuid} /home xfs defaults 0 2", fstab);
    }

    [Fact]
    public void A_dhcp_node_without_mac_matches_any_ethernet()
    {
        string unit = NodeConfigurator.NetworkdUnit(NodeList.Parse("n1")[0]);
        Assert.Contains("Name=en* eth*", unit);
        Assert.Contains("DHCP=yes", unit);
    }
}
