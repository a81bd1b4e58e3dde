using System.Net;
using KaDeploy.Netboot;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Netboot;

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class BootServiceTests
{
    private static readonly IReadOnlyList<NetbootNode> Nodes = NodeList.Parse("n1 52:54:00:18:00:01\nn2 52:54:00:18:00:02 198.18.0.52\n", "nodes");

    [Fact]
    public void DhcpModeAnswersOnlyListedNodesOnOneInterface()
    {
        string c = DnsmasqConfig.Render("br0", (IPAddress.Parse("198.18.0.100"), IPAddress.Parse("198.18.0.150")), null, Nodes, "/s");
        Assert.Contains("interface=br0\n", c);
        Assert.Contains("bind-interfaces\n", c);
        Assert.Contains("port=0\n", c);
        Assert.Contains("dhcp-range=198.18.0.100,198.18.0.150,12h\n", c);
        Assert.Contains("dhcp-host=52:54:00:18:00:01,n1\n", c);
        Assert.Contains("dhcp-host=52:54:00:18:00:02,198.18.0.52,n2\n", c);
        Assert.Contains("dhcp-ignore=tag:!known\n", c);
        Assert.Contains("dhcp-boot=tag:ipxe,boot.ipxe\n", c);
        Assert.Contains("dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi\n", c);
        Assert.Contains("dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe\n", c);
        Assert.DoesNotContain("proxy", c);
    }

    [Fact]
    public void ProxyModeGivesBootInformationOnly()
    {
        string c = DnsmasqConfig.Render("br0", null, IPAddress.Parse("198.18.0.0"), Nodes, "/s");
        Assert.Contains("dhcp-range=198.18.0.0,proxy\n", c);
        Assert.Contains("pxe-service=tag:!ipxe,x86PC,\"ka-deploy\",undionly.kpxe\n", c);
        Assert.Contains("pxe-service=tag:!ipxe,x86-64_EFI,\"ka-deploy\",ipxe.efi\n", c);
        Assert.Contains("dhcp-ignore=tag:!known\n", c);
        Assert.DoesNotContain("dhcp-boot", c);
    }

    [Fact]
    public void StateSwitchesFromInstallToLocalAndSurvivesRestart()
    {
        using var dir = new TempDirectory("nbstate");
        var scripts = new BootScripts { KernelArguments = "console=ttyS0 ka.server=198.18.0.1 ka.device=/dev/vda", ReportTo = "198.18.0.1:30767" };
        var store = new NodeStateStore(dir.Path);
        store.Sync(Nodes, scripts);
        string script = File.ReadAllText(dir.Sub("tftp/nodes/52-54-00-18-00-01.ipxe"));
        Assert.Contains("kernel /vmlinuz initrd=initrd.img console=ttyS0 ka.server=198.18.0.1 ka.device=/dev/vda ka.name=n1 ka.mac=52:54:00:18:00:01 ka.report=198.18.0.1:30767", script);
        store.Set(Nodes[0], BootAction.Local, "installed", scripts);
        script = File.ReadAllText(dir.Sub("tftp/nodes/52-54-00-18-00-01.ipxe"));
        Assert.Contains("sanboot --no-describe --drive 0x80", script);
        Assert.Contains("iseq ${platform} efi && exit 1", script);
        Assert.DoesNotContain("kernel", script);

        // A restarted service keeps finished nodes local; a node removed from the list loses its files.
        var again = new NodeStateStore(dir.Path);
        again.Sync(Nodes.Take(1).ToList(), scripts);
        var list = again.List();
        Assert.Equal(BootAction.Local, Assert.Single(list).Action);
        Assert.False(File.Exists(dir.Sub("tftp/nodes/52-54-00-18-00-02.ipxe")));
    }

    [Fact]
    public void TheStateDirectoryIsRootsOnlySinceItsBootScriptsHoldTheKey()
    {
        using var dir = new TempDirectory("nbmode");
        Directory.CreateDirectory(dir.Sub("state"));
        File.SetUnixFileMode(dir.Sub("state"), (UnixFileMode)0x1ED); // 0755, as an operator's mkdir leaves it
        var store = new NodeStateStore(dir.Sub("state"));
        store.Sync(Nodes, new BootScripts { KernelArguments = "ka.key=secret", ReportTo = "198.18.0.1:30767" });
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(dir.Sub("state")));
        // The scripts themselves stay world-readable: dnsmasq running as root serves nothing else over TFTP.
        Assert.True(File.GetUnixFileMode(dir.Sub("state/tftp/nodes/52-54-00-18-00-01.ipxe")).HasFlag(UnixFileMode.OtherRead));
    }

    /// <summary>The interface's lock is taken before the image is built: a second service is refused at once, not after a
    /// build (here the build would refuse the junk kernel package with another message).</summary>
    [SkippableFact]
    public async Task ASecondServeIsRefusedBeforeItBuildsAnImage()
    {
        Skip.If(Environment.UserName != "root", "needs root (the lock lives in /run/ka-deploy)");
        using var dir = new TempDirectory("nbserve2");
        File.WriteAllText(dir.Sub("nodes"), "n1 52:54:00:12:34:56\n");
        File.WriteAllText(dir.Sub("fake.deb"), "not a deb");
        using var held = BootService.TakeLock(BootServiceOptions.DefaultLockDirectory, "lo");
        var r = await KaDeploy.Tests.Cli.CliRunner.RunAsync(KaDeploy.Tests.Cli.CliRunner.AppHost,
            ["netboot", "serve", "--interface", "lo", "--nodes", dir.Sub("nodes"), "--install", "/dev/vdz", "--range", "127.0.0.100,127.0.0.150",
             "--state-dir", dir.Sub("state"), "--cache", dir.Sub("cache"), "--kernel-package", dir.Sub("fake.deb")], TimeSpan.FromSeconds(60));
        Assert.Equal(1, r.Code);
        Assert.Contains("another `ka-deploy netboot serve` is already serving lo (lock ", r.Err);
        Assert.False(Directory.Exists(dir.Sub("cache")), "the image build started before the lock was checked");
    }

    [Fact]
    public void EntryScriptChainsThePerMacScript()
    {
        Assert.Contains("chain nodes/${netX/mac:hexhyp}.ipxe", BootScripts.Entry);
    }

    [Fact]
    public void ReportFromAnAddressThatIsNotTheNodesIsRefused()
    {
        using var dir = new TempDirectory("nbreport");
        var scripts = new BootScripts { KernelArguments = "x", ReportTo = "198.18.0.1:1" };
        var store = new NodeStateStore(dir.Path);
        store.Sync(Nodes, scripts);
        var service = new BootService(new BootServiceOptions
        {
            Interface = "kdtbn-none", Nodes = Nodes, Proxy = true, KernelArguments = "x",
            Image = new BootImage(dir.Path, "v", "k", 0, 0, true, TimeSpan.Zero),
        });
        // No ARP entry for this address on that interface: the claim cannot be checked, so nothing changes.
        Assert.StartsWith("error", service.Handle("installed 52:54:00:18:00:01", IPAddress.Parse("198.18.0.77"), store, scripts));
        Assert.StartsWith("error", service.Handle("installed 52:54:00:18:00:09", IPAddress.Parse("198.18.0.77"), store, scripts));
        Assert.StartsWith("error", service.Handle("rm -rf /", IPAddress.Parse("198.18.0.77"), store, scripts));
        Assert.All(store.List(), s => Assert.Equal(BootAction.Install, s.Action));
    }

    [Fact]
    public async Task MissingInterfaceIsRefusedBeforeAnythingStarts()
    {
        using var dir = new TempDirectory("nbif");
        var service = new BootService(new BootServiceOptions
        {
            Interface = "kdtbn-nosuch0", Nodes = Nodes, Range = (IPAddress.Parse("198.18.0.100"), IPAddress.Parse("198.18.0.150")),
            KernelArguments = "x", StateDirectory = dir.Sub("state"), Image = new BootImage(dir.Path, "v", "k", 0, 0, true, TimeSpan.Zero),
        });
        var e = await Assert.ThrowsAsync<KaDeployException>(() => service.RunAsync(CancellationToken.None));
        Assert.Equal("interface kdtbn-nosuch0 does not exist (ip link shows the interfaces of this network namespace)", e.Message);
        Assert.False(Directory.Exists(dir.Sub("state")));
    }

    [Fact]
    public void SecondServiceOnTheSameInterfaceIsRefused()
    {
        using var dir = new TempDirectory("nblock");
        using (BootService.TakeLock(dir.Path, "kdtbn-br0"))
        {
            var e = Assert.Throws<KaDeployException>(() => BootService.TakeLock(dir.Path, "kdtbn-br0"));
            Assert.StartsWith("another `ka-deploy netboot serve` is already serving kdtbn-br0 (lock ", e.Message);
            using var other = BootService.TakeLock(dir.Path, "kdtbn-br1"); // another interface: its own service
        }
        using var again = BootService.TakeLock(dir.Path, "kdtbn-br0");     // released when the first service ends
    }

    [Fact]
    public void RangeOrProxyIsRequiredButNotBoth()
    {
        using var dir = new TempDirectory("nbopt");
        var image = new BootImage(dir.Path, "v", "k", 0, 0, true, TimeSpan.Zero);
        Assert.Throws<KaDeployException>(() => new BootService(new BootServiceOptions { Interface = "x", Nodes = Nodes, KernelArguments = "x", Image = image }));
        Assert.Throws<KaDeployException>(() => new BootService(new BootServiceOptions
        {
            Interface = "x", Nodes = Nodes, KernelArguments = "x", Image = image, Proxy = true, Range = (IPAddress.Loopback, IPAddress.Loopback),
        }));
    }

    [Fact]
    public void ProbeBuildsADiscoverAndReadsOnlyMatchingOffers()
    {
        byte[] mac = [0x52, 0x54, 0, 0x18, 0, 1];
        byte[] d = DhcpProbe.Discover(0x11223344, mac);
        Assert.Equal(1, d[0]);
        Assert.Equal(0x80, d[10]);                     // broadcast flag: the prober has no address yet
        Assert.Equal(mac, d[28..34]);
        Assert.Equal([99, 130, 83, 99, 53, 1, 1], d[236..243]);

        byte[] offer = (byte[])d.Clone();
        offer[0] = 2;
        offer[16] = 198; offer[17] = 18; offer[18] = 0; offer[19] = 77;
        offer[242] = 2;                                 // DHCPOFFER
        byte[] withServer = [.. offer[..243], 54, 4, 198, 18, 0, 2, 255];
        Assert.True(DhcpProbe.TryParseOffer(withServer, 0x11223344, out var server, out var offered));
        Assert.Equal(IPAddress.Parse("198.18.0.2"), server);
        Assert.Equal(IPAddress.Parse("198.18.0.77"), offered);
        Assert.False(DhcpProbe.TryParseOffer(withServer, 0x11223345, out _, out _));      // another exchange
        Assert.False(DhcpProbe.TryParseOffer(withServer[..241], 0x11223344, out _, out _)); // truncated
        byte[] ack = (byte[])withServer.Clone();
        ack[242] = 5;
        Assert.False(DhcpProbe.TryParseOffer(ack, 0x11223344, out _, out _));
        byte[] bad = [.. offer[..243], 54, 200, 1];                                      // option length past the end
        Assert.False(DhcpProbe.TryParseOffer(bad, 0x11223344, out _, out _));
    }
}
