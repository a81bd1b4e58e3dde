using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Session;

namespace KaDeploy.Tests.Session;

/// <summary>Who may open a data link to a node: only its planned children, holding the session's link key.</summary>
public class ChildLinksTests
{
    private static async Task<ControlMessage?> HelloAsync(int port, byte[] key, int nodeId, long resume = 0)
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await s.ConnectAsync(IPAddress.Loopback, port);
        var channel = new ControlChannel(new NetworkStream(s));
        await channel.SendAsync(new DataHello(ProtocolConstants.Version, key, nodeId, resume), default);
        return await channel.ReceiveAsync(default);
    }

    [Fact]
    public async Task StrangersWrongKeysAndForeignNodesAreRefusedAndTheChildIsServed()
    {
        var key = RandomNumberGenerator.GetBytes(16);
        using var listener = new KaDeploy.Transport.TcpTransport(TimeSpan.FromSeconds(30)).Listen(IPAddress.Loopback, 0, "data");
        int port = listener.LocalEndPoint.Port;
        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        var log = new StringWriter();
        var links = new ChildLinks(listener, KaDeploy.Transport.NoHandshake.Instance, "test", ring, key, [7], l => { lock (log) log.WriteLine(l); }, (_, _, _) => { });
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var accepting = links.AcceptAsync(cts.Token);

        var wrongKey = Assert.IsType<Refuse>(await HelloAsync(port, RandomNumberGenerator.GetBytes(16), 7));
        Assert.Contains("wrong link key", wrongKey.Reason);
        var foreign = Assert.IsType<Refuse>(await HelloAsync(port, key, 8));
        Assert.Contains("node 8 is not a child of this node", foreign.Reason);
        var tooFar = Assert.IsType<Refuse>(await HelloAsync(port, key, 7, resume: 1 << 30));
        Assert.Contains("cannot resume at offset", tooFar.Reason);

        // The real child gets DataAccept and then exactly the frames the ring holds.
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await s.ConnectAsync(IPAddress.Loopback, port);
        var stream = new NetworkStream(s);
        var channel = new ControlChannel(stream);
        await channel.SendAsync(new DataHello(ProtocolConstants.Version, key, 7, 0), cts.Token);
        await channel.ExpectAsync<DataAccept>(cts.Token);
        var data = RandomNumberGenerator.GetBytes(200_000);
        var writer = new RingWriterStream(ring, cts.Token);
        await writer.WriteAsync(data, cts.Token);
        await writer.CompleteAsync(data.Length, DigestAlgorithm.Sha256, SHA256.HashData(data), cts.Token);
        using var childRing = new RelayRing(8 * RelayRing.SlotSize);
        var reader = new RingReaderStream(childRing.Attach("sink"));
        var receive = new FrameReceiver(stream, childRing).RunAsync(cts.Token);
        var got = new MemoryStream();
        await reader.CopyToAsync(got, cts.Token);
        var end = await receive;
        Assert.Equal(data, got.ToArray());
        Assert.Equal(SHA256.HashData(data), end.Digest);
        Assert.Equal(DigestAlgorithm.Sha256, end.Algorithm);
        s.Shutdown(SocketShutdown.Both);
        await links.WhenSendersDoneAsync();
        await cts.CancelAsync();
        await accepting;
        Assert.Equal(3, log.ToString().Split('\n').Count(l => l.Contains("refused data link")));
    }
}
