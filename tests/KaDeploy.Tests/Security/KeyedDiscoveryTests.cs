using System.Net;
using System.Net.Sockets;
using KaDeploy.Security;
using KaDeploy.Session;

namespace KaDeploy.Tests.Security;

/// <summary>
/// Session discovery with a key (issue 9): a keyed client follows only the answer signed with its key for
/// its own request's nonce; a rogue server's answer (another key, no tag, or an answer replayed from an
/// earlier request) is ignored with one line, not counted as a second server.
/// </summary>
public class KeyedDiscoveryTests
{
    private static byte[] Answer(int port, ReadOnlySpan<byte> tag)
    {
        var a = new byte[12 + tag.Length];
        KaDeploy.Protocol.ProtocolConstants.Magic.CopyTo(a);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(a.AsSpan(8), KaDeploy.Protocol.ProtocolConstants.Version);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(a.AsSpan(10), (ushort)port);
        tag.CopyTo(a.AsSpan(12));
        return a;
    }

    private static Socket Udp(string address)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        s.Bind(new IPEndPoint(IPAddress.Parse(address), 0));
        return s;
    }

    [Fact]
    public async Task AKeyedClientFollowsTheSignedAnswerAndIgnoresTheRogueOnesOnce()
    {
        using var key = PresharedKey.Generate();
        using var rogueKey = PresharedKey.Generate();
        using var listener = Udp("127.0.0.1");
        using var rogue = Udp("127.0.0.2");
        using var clear = Udp("127.0.0.4");
        using var real = Udp("127.0.0.3");
        int port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        var log = new List<string>();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var find = Discovery.FindServerAsync("lab", IPAddress.Loopback, port, IPAddress.Loopback, TimeSpan.FromSeconds(30), key,
            l => { lock (log) log.Add(l); }, cts.Token);

        var buffer = new byte[1024];
        var r = await listener.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), cts.Token);
        var request = buffer.AsSpan(0, r.ReceivedBytes).ToArray();
        Assert.True(Discovery.TryParseRequest(request, out var session, out var nonceSpan));
        Assert.Equal("lab", session);
        byte[] nonce = nonceSpan.ToArray();
        Assert.Equal(DiscoveryAuthenticator.NonceSize, nonce.Length);

        // The rogue answers twice with another key's tag, an unkeyed server answers without one; the real one last.
        var tag = new byte[DiscoveryAuthenticator.TagSize];
        DiscoveryAuthenticator.ComputeTag(rogueKey, nonce, "lab", 4000, tag);
        await rogue.SendToAsync(Answer(4000, tag), r.RemoteEndPoint, cts.Token);
        await rogue.SendToAsync(Answer(4000, tag), r.RemoteEndPoint, cts.Token);
        await clear.SendToAsync(Answer(4001, []), r.RemoteEndPoint, cts.Token);
        DiscoveryAuthenticator.ComputeTag(key, nonce, "lab", 5000, tag);
        await real.SendToAsync(Answer(5000, tag), r.RemoteEndPoint, cts.Token);

        var found = await find;
        Assert.Equal(new IPEndPoint(IPAddress.Parse("127.0.0.3"), 5000), found);
        Assert.Single(log, l => l.Contains("ignored a discovery answer from 127.0.0.2: not signed with this key"));
        Assert.Single(log, l => l.Contains("ignored a discovery answer from 127.0.0.4"));
    }

    [Fact]
    public async Task AnAnswerSignedForAnEarlierRequestIsIgnored()
    {
        using var key = PresharedKey.Generate();
        using var listener = Udp("127.0.0.1");
        using var replayer = Udp("127.0.0.5");
        int port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        var log = new List<string>();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var find = Discovery.FindServerAsync("lab", IPAddress.Loopback, port, IPAddress.Loopback, TimeSpan.FromSeconds(3), key,
            l => { lock (log) log.Add(l); }, cts.Token);
        var buffer = new byte[1024];
        var r = await listener.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), cts.Token);
        // A real server's answer to some other request (another nonce), replayed.
        var tag = new byte[DiscoveryAuthenticator.TagSize];
        DiscoveryAuthenticator.ComputeTag(key, DiscoveryAuthenticator.NewNonce(), "lab", 5000, tag);
        await replayer.SendToAsync(Answer(5000, tag), r.RemoteEndPoint, cts.Token);
        var e = await Assert.ThrowsAsync<KaDeployException>(() => find);
        Assert.Contains("no server answered", e.Message);
        Assert.Contains(log, l => l.Contains("ignored a discovery answer from 127.0.0.5"));
    }
}
