using System.Net;
using System.Text;

namespace KaDeploy.Netboot;

/// <summary>
/// The dnsmasq configuration of the boot service (dnsmasq(8)): DHCP on one interface only, either for an address
/// range or as proxy-DHCP beside the site's server; TFTP from the state directory; no DNS. Only listed nodes are
/// answered (<c>dhcp-ignore=tag:!known</c>); PXE firmware gets iPXE (BIOS undionly.kpxe, UEFI ipxe.efi), iPXE gets
/// <c>boot.ipxe</c>.
/// </summary>
public static class DnsmasqConfig
{
    /// <summary>Renders the configuration.</summary>
    /// <param name="interfaceName">The only interface dnsmasq listens on.</param>
    /// <param name="range">Address range (DHCP server mode), or null with <paramref name="proxyNetwork"/>.</param>
    /// <param name="proxyNetwork">Network address of the link (proxy-DHCP mode), or null.</param>
    /// <param name="nodes">Nodes to answer; everyone else is ignored.</param>
    /// <param name="stateDirectory">Where the leases, pid file and TFTP root live.</param>
    public static string Render(string interfaceName, (IPAddress Start, IPAddress End)? range, IPAddress? proxyNetwork, IReadOnlyList<NetbootNode> nodes, string stateDirectory)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        if ((range is null) == (proxyNetwork is null)) throw new ArgumentException("exactly one of range and proxy network");
        var c = new StringBuilder();
        c.AppendLine("# written by ka-deploy netboot serve; rewritten at every start");
        c.AppendLine("port=0"); // no DNS
        c.AppendLine($"interface={interfaceName}");
        c.AppendLine("bind-interfaces");
        c.AppendLine("except-interface=lo");
        c.AppendLine("user=root"); // TFTP files and leases stay in the root-owned state directory
        c.AppendLine($"pid-file={Path.Combine(stateDirectory, "dnsmasq.pid")}");
        c.AppendLine($"dhcp-leasefile={Path.Combine(stateDirectory, "dnsmasq.leases")}");
        c.AppendLine("enable-tftp");
        c.AppendLine($"tftp-root={Path.Combine(stateDirectory, "tftp")}");
        if (range is { } r) c.AppendLine($"dhcp-range={r.Start},{r.End},12h");
        else c.AppendLine($"dhcp-range={proxyNetwork},proxy");
        foreach (var n in nodes)
            c.AppendLine(n.Address is null ? $"dhcp-host={n.Mac},{n.Name}" : $"dhcp-host={n.Mac},{n.Address},{n.Name}");
        c.AppendLine("dhcp-ignore=tag:!known"); // nodes not in the list get nothing (dnsmasq logs them as ignored)
        c.AppendLine("dhcp-userclass=set:ipxe,iPXE");
        c.AppendLine("dhcp-match=set:ipxe,175");
        c.AppendLine("dhcp-match=set:efi64,option:client-arch,7");
        c.AppendLine("dhcp-match=set:efi64,option:client-arch,9");
        if (range is not null)
        {
            c.AppendLine("dhcp-boot=tag:ipxe,boot.ipxe");
            c.AppendLine("dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi");
            c.AppendLine("dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe");
        }
        else
        {
            // Proxy-DHCP: the site's server gives addresses, this one only the boot file (PXE boot server answers).
            c.AppendLine("pxe-service=tag:ipxe,x86PC,\"ka-deploy\",boot.ipxe");
            c.AppendLine("pxe-service=tag:!ipxe,x86PC,\"ka-deploy\",undionly.kpxe");
            c.AppendLine("pxe-service=tag:ipxe,x86-64_EFI,\"ka-deploy\",boot.ipxe");
            c.AppendLine("pxe-service=tag:!ipxe,x86-64_EFI,\"ka-deploy\",ipxe.efi");
            c.AppendLine("pxe-service=tag:ipxe,BC_EFI,\"ka-deploy\",boot.ipxe");
            c.AppendLine("pxe-service=tag:!ipxe,BC_EFI,\"ka-deploy\",ipxe.efi");
        }
        return c.ToString();
    }
}
