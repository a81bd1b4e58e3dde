using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace KaDeploy.Netboot;

/// <summary>An answer to the probe: the DHCP server's identifier and the address it offered.</summary>
public sealed record DhcpOffer(IPAddress Server, IPAddress Offered, IPAddress From);

/// <summary>
/// Looks for DHCP servers on one link before the boot service answers DHCP there: broadcasts a DHCPDISCOVER
/// (RFC 2131) from UDP port 68 on that interface only, and collects the DHCPOFFERs that answer it.
/// Bounded: a few tries, each waiting a fixed time. A second DHCP server on a production network is the
/// classic disaster of network-install tools; refusing to start beats a race for every lease.
/// </summary>
public static class DhcpProbe
{
    private const int SolSocket = 1, SoBindToDevice = 25;

    /// <summary>Sends up to <paramref name="tries"/> DISCOVERs, <paramref name="wait"/> apart; returns the offers seen (empty: none).</summary>
    public static async Task<IReadOnlyList<DhcpOffer>> FindServersAsync(string interfaceName, byte[] mac, int tries, TimeSpan wait, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(mac);
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        udp.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        udp.EnableBroadcast = true;
        udp.SetRawSocketOption(SolSocket, SoBindToDevice, Encoding.ASCII.GetBytes(interfaceName + "\0"));
        try { udp.Bind(new IPEndPoint(IPAddress.Any, 68)); }
        catch (SocketException e) { throw new KaDeployException($"cannot probe for DHCP servers on {interfaceName}: UDP port 68: {e.Message}"); }

        uint xid = (uint)Random.Shared.Next();
        byte[] discover = Discover(xid, mac);
        var offers = new List<DhcpOffer>();
        var buffer = new byte[1500];
        for (int t = 0; t < tries && offers.Count == 0; t++)
        {
            await udp.SendToAsync(discover, SocketFlags.None, new IPEndPoint(IPAddress.Broadcast, 67), cancellationToken).ConfigureAwait(false);
            using var window = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            window.CancelAfter(wait);
            while (true)
            {
                SocketReceiveFromResult r;
                try { r = await udp.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), window.Token).ConfigureAwait(false); }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested) { break; }
                if (TryParseOffer(buffer.AsSpan(0, r.ReceivedBytes), xid, out var server, out var offered))
                    offers.Add(new DhcpOffer(server ?? ((IPEndPoint)r.RemoteEndPoint).Address, offered, ((IPEndPoint)r.RemoteEndPoint).Address));
            }
        }
        return offers;
    }

    /// <summary>A DHCPDISCOVER with the broadcast flag set (the prober has no address to be answered at).</summary>
    internal static byte[] Discover(uint xid, ReadOnlySpan<byte> mac)
    {
        var p = new byte[300];
        p[0] = 1; p[1] = 1; p[2] = 6;                                   // BOOTREQUEST, Ethernet, 6-byte address
        BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(4), xid);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(10), 0x8000);   // broadcast flag
        mac[..6].CopyTo(p.AsSpan(28));
        int o = 236;
        p[o++] = 99; p[o++] = 130; p[o++] = 83; p[o++] = 99;            // magic cookie
        p[o++] = 53; p[o++] = 1; p[o++] = 1;                            // DHCP message type: DISCOVER
        p[o++] = 55; p[o++] = 2; p[o++] = 1; p[o++] = 3;                // ask for netmask, router
        p[o] = 255;
        return p;
    }

    /// <summary>True for a DHCPOFFER answering <paramref name="xid"/>; reads the server identifier (option 54) and yiaddr.</summary>
    internal static bool TryParseOffer(ReadOnlySpan<byte> p, uint xid, out IPAddress? server, out IPAddress offered)
    {
        server = null;
        offered = IPAddress.None;
        if (p.Length < 240 || p[0] != 2 || BinaryPrimitives.ReadUInt32BigEndian(p[4..]) != xid) return false;
        if (p[236] != 99 || p[237] != 130 || p[238] != 83 || p[239] != 99) return false;
        offered = new IPAddress(p.Slice(16, 4));
        bool isOffer = false;
        for (int o = 240; o < p.Length;)
        {
            byte code = p[o];
            if (code == 255) break;
            if (code == 0) { o++; continue; }
            if (o + 1 >= p.Length) return false;
            int len = p[o + 1];
            if (o + 2 + len > p.Length) return false;
            var value = p.Slice(o + 2, len);
            if (code == 53 && len == 1) isOffer = value[0] == 2;
            if (code == 54 && len == 4) server = new IPAddress(value);
            o += 2 + len;
        }
        return isOffer;
    }
}
