using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using KaDeploy.Payloads;
using KaDeploy.Protocol;

namespace KaDeploy.Tests.TestSupport;

/// <summary>
/// Data frames made by hand, exactly as a parent sends them (header + payload), so that a test can
/// send a stream that is right in every way but one: a wrong End digest, one corrupted frame, a cut.
/// </summary>
public static class WireFrames
{
    /// <summary>One Data frame of <paramref name="payload"/> at wire offset <paramref name="offset"/>, with its true XxHash3.</summary>
    public static byte[] Data(ReadOnlySpan<byte> payload, long offset) =>
        Frame(DataFrameType.Data, payload, offset, DataFrameHeader.ComputeChecksum(payload, offset));

    /// <summary>An End frame promising <paramref name="wireLength"/>, <paramref name="payloadLength"/> and <paramref name="sha256"/>, with a true checksum.</summary>
    public static byte[] End(long wireLength, long payloadLength, ReadOnlySpan<byte> sha256, long? frameOffset = null,
        DigestAlgorithm algorithm = DigestAlgorithm.Sha256)
    {
        var body = new byte[DataFrameHeader.EndPayloadSize];
        new KaDeploy.Relay.EndOfStream(wireLength, payloadLength, algorithm, sha256.ToArray()).Write(body);
        long at = frameOffset ?? wireLength;
        return Frame(DataFrameType.End, body, at, DataFrameHeader.ComputeChecksum(body, at));
    }

    /// <summary>Publishes a whole wire frame into <paramref name="ring"/>, the test being the producer.</summary>
    public static async Task PublishAsync(KaDeploy.Relay.RelayRing ring, byte[] frame, CancellationToken cancellationToken)
    {
        var slot = await ring.AcquireAsync(cancellationToken);
        frame.CopyTo(slot.Span);
        ring.Publish(DataFrameHeader.Read(frame), frame.Length);
    }

    /// <summary>A frame with whatever checksum the caller gives.</summary>
    public static byte[] Frame(DataFrameType type, ReadOnlySpan<byte> payload, long offset, ulong checksum)
    {
        var frame = new byte[DataFrameHeader.Size + payload.Length];
        new DataFrameHeader(type, payload.Length, offset, checksum).Write(frame);
        payload.CopyTo(frame.AsSpan(DataFrameHeader.Size));
        return frame;
    }

    /// <summary>
    /// The frames of an uncompressed stream of <paramref name="payload"/> cut into chunks of
    /// <paramref name="chunk"/> bytes, then its End frame (true digest unless <paramref name="sha256"/> says otherwise).
    /// </summary>
    public static List<byte[]> Stream(byte[] payload, int chunk, byte[]? sha256 = null, long? payloadLength = null, long? wireLength = null)
    {
        var frames = new List<byte[]>();
        for (int at = 0; at < payload.Length; at += chunk)
            frames.Add(Data(payload.AsSpan(at, Math.Min(chunk, payload.Length - at)), at));
        // The End frame sits where the data ended, whatever length it claims.
        frames.Add(End(wireLength ?? payload.Length, payloadLength ?? payload.Length, sha256 ?? SHA256.HashData(payload), payload.Length));
        return frames;
    }

    /// <summary>The frames digest (<see cref="DigestAlgorithm.Frames"/>) of the Data frames among <paramref name="frames"/>, as the server computes it.</summary>
    public static byte[] FramesDigest(IEnumerable<byte[]> frames)
    {
        var digest = new KaDeploy.Relay.FrameDigest();
        foreach (var f in frames)
        {
            var header = DataFrameHeader.Read(f);
            if (header.Type == DataFrameType.Data) digest.Append(header, f.AsSpan(DataFrameHeader.Size));
        }
        return digest.Finish();
    }

    /// <summary>The frames end to end, as they travel on the link.</summary>
    public static byte[] Concat(IEnumerable<byte[]> frames) => [.. frames.SelectMany(f => f)];
}

/// <summary>
/// A raw TCP peer on 127.0.0.1 port 0 that speaks the server's side of the protocol by hand: it
/// registers real <see cref="KaDeploy.Session.DeployClient"/>s, sends them the plans the test writes
/// (parents may be proxies), serves its direct children whatever bytes the test scripts, and reads
/// each node's verdict. It is how a test gives a node a stream that is wrong in one chosen way.
/// </summary>
public sealed class ScriptedServer : IAsyncDisposable
{
    private readonly Socket _control = Listen();
    private readonly Socket _data = Listen();
    private readonly List<IAsyncDisposable> _owned = [];
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _heartbeats = [];

    /// <summary>The session's link key, as a real server puts in every plan.</summary>
    public byte[] LinkKey { get; } = RandomNumberGenerator.GetBytes(16);

    public int ControlPort => ((IPEndPoint)_control.LocalEndPoint!).Port;
    public int DataPort => ((IPEndPoint)_data.LocalEndPoint!).Port;

    private static Socket Listen()
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        s.Listen(512);
        return s;
    }

    /// <summary>A node as registered: its id, the data endpoint it announced and its control channel.</summary>
    public sealed record Node(int Id, string Name, IPEndPoint Data, ControlChannel Channel);

    /// <summary>Accepts <paramref name="count"/> registrations; node ids are 1..count in arrival order.</summary>
    public async Task<Node[]> RegisterAsync(int count, CancellationToken ct)
    {
        var nodes = new Node[count];
        for (int i = 0; i < count; i++)
        {
            var socket = await _control.AcceptAsync(ct);
            var stream = new NetworkStream(socket, ownsSocket: true);
            await Handshake.AcceptAsync(stream, null, null, "node", ct); // the v2 handshake, unkeyed
            var channel = new ControlChannel(stream);
            lock (_owned) _owned.Add(channel);
            var hello = await channel.ExpectAsync<Hello>(ct);
            var remote = (IPEndPoint)socket.RemoteEndPoint!;
            var address = hello.DataAddress.Length > 0 ? IPAddress.Parse(hello.DataAddress) : remote.Address;
            await channel.SendAsync(new Welcome(i + 1, i + 1, count), ct);
            nodes[i] = new Node(i + 1, hello.NodeName, new IPEndPoint(address, hello.DataPort), channel);
            lock (_owned) _heartbeats.Add(HeartbeatAsync(channel));
        }
        return nodes;
    }

    // A real server says "alive" every second; without it a node declares the server lost after its failure timeout
    // (3 s), and on a loaded machine that could come before the verdict a test waits for. Stops when the server is
    // disposed or the node's control link is gone.
    private async Task HeartbeatAsync(ControlChannel channel)
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                await channel.SendAsync(new Heartbeat(0, FlowState.Flowing), _stop.Token);
                await Task.Delay(TimeSpan.FromSeconds(1), _stop.Token);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException or System.Net.Sockets.SocketException) { }
    }

    /// <summary>The plan a real server would send, for a raw payload without compression.</summary>
    public Plan PlanFor(int nodeId, int parentId, IPEndPoint? parent, params int[] children) =>
        new(nodeId, parentId, parent?.Address.ToString() ?? "", parent?.Port ?? DataPort, children,
            PayloadKind.Raw, WireCompression.None, -1, LinkKey, Digest);

    /// <summary>The end-to-end digest the plans name (SHA-256 unless a test says otherwise).</summary>
    public DigestAlgorithm Digest { get; set; } = DigestAlgorithm.Sha256;

    /// <summary>Accepts one child's data link, checks its hello and accepts it; returns the node id and the raw stream.</summary>
    public async Task<(int NodeId, NetworkStream Link)> AcceptDataLinkAsync(CancellationToken ct)
    {
        var socket = await _data.AcceptAsync(ct);
        var link = new NetworkStream(socket, ownsSocket: true);
        lock (_owned) _owned.Add(link);
        await Handshake.AcceptAsync(link, null, null, "child", ct);
        var channel = new ControlChannel(link);
        var hello = await channel.ExpectAsync<DataHello>(ct);
        Assert.Equal(LinkKey, hello.LinkKey);
        await channel.SendAsync(new DataAccept(), ct);
        return (hello.NodeId, link);
    }

    /// <summary>Sends <paramref name="bytes"/> on a data link, then closes it: an orderly end, wherever it falls.</summary>
    public static async Task SendAndCloseAsync(NetworkStream link, ReadOnlyMemory<byte> bytes, CancellationToken ct)
    {
        await link.WriteAsync(bytes, ct);
        await link.FlushAsync(ct);
        link.Socket.Shutdown(SocketShutdown.Send);
        // Wait for the child to hang up, so that every byte is surely delivered before the socket goes.
        var drain = new byte[64];
        try { while (await link.ReadAsync(drain, ct) > 0) { } }
        catch (IOException) { }
    }

    /// <summary>Reads a node's control messages until its LinkUp: its parent link is up, as a real server waits for before it streams.</summary>
    public static async Task LinkedAsync(Node node, CancellationToken ct)
    {
        while (await node.Channel.ReceiveAsync(ct) is { } m)
            if (m is LinkUp) return;
        throw new InvalidOperationException($"node {node.Name} closed its control link before linking up");
    }

    /// <summary>Reads a node's control messages until its Done (or the link closes: null).</summary>
    public static async Task<Done?> DoneAsync(Node node, CancellationToken ct)
    {
        try
        {
            while (await node.Channel.ReceiveAsync(ct) is { } m)
                if (m is Done d) return d;
        }
        catch (IOException) { }
        return null;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        Task[] heartbeats;
        lock (_owned) heartbeats = [.. _heartbeats];
        await Task.WhenAll(heartbeats);
        _stop.Dispose();
        _control.Dispose();
        _data.Dispose();
        IAsyncDisposable[] owned;
        lock (_owned) owned = [.. _owned];
        foreach (var o in owned)
        {
            try { await o.DisposeAsync(); }
            catch (ObjectDisposedException) { }
        }
    }
}
