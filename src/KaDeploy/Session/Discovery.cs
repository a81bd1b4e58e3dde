using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using KaDeploy.Protocol;

namespace KaDeploy.Session;

/// <summary>
/// Finding a server by session name, as the original did: the client broadcasts the name over UDP
/// (port 4957) and a server of that session answers with its control port. Ten tries, one second apart.
/// Request: <c>magic | u16 version | u16 length | session</c>; answer: <c>magic | u16 version | u16 control port</c>.
/// </summary>
public static class Discovery
{
    private const int Tries = 10;

    /// <summary>Answers discovery requests for <paramref name="session"/> until cancelled. Never sends unprompted.</summary>
    public static async Task RespondAsync(Socket udp, string session, int controlPort, Action<string> log, CancellationToken cancellationToken)
    {
        var buffer = new byte[1024];
        var reply = new byte[ProtocolConstants.Magic.Length + 4];
        ProtocolConstants.Magic.CopyTo(reply);
        BinaryPrimitives.WriteUInt16LittleEndian(reply.AsSpan(8), ProtocolConstants.Version);
        BinaryPrimitives.WriteUInt16LittleEndian(reply.AsSpan(10), (ushort)controlPort);
        EndPoint any = new IPEndPoint(udp.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        while (!cancellationToken.IsCancellationRequested)
        {
            SocketReceiveFromResult r;
            try
            {
                r = await udp.ReceiveFromAsync(buffer, SocketFlags.None, any, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) { break; }
            catch (ObjectDisposedException) { break; }
            catch (SocketException e) when (cancellationToken.IsCancellationRequested || e.SocketErrorCode == SocketError.OperationAborted) { break; }
            catch (SocketException e) { log($"discovery: {e.Message}"); continue; }
            if (TryParseRequest(buffer.AsSpan(0, r.ReceivedBytes), out string? asked) && asked == session)
            {
                try { await udp.SendToAsync(reply, SocketFlags.None, r.RemoteEndPoint, cancellationToken).ConfigureAwait(false); }
                catch (SocketException e) { log($"discovery: cannot answer {r.RemoteEndPoint}: {e.Message}"); }
            }
        }
    }

    /// <summary>
    /// Binds the discovery responder socket to UDP <paramref name="port"/> (0 = any free port, read back
    /// from the socket); null (with a logged reason) when the port is taken.
    /// </summary>
    public static Socket? BindResponder(IPAddress bind, Action<string> log, int port = ProtocolConstants.DiscoveryPort)
    {
        var udp = new Socket(bind.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            udp.Bind(new IPEndPoint(bind, port));
            return udp;
        }
        catch (SocketException e)
        {
            udp.Dispose();
            log($"warning: session discovery disabled, UDP port {port} unavailable ({e.Message}); clients need --server");
            return null;
        }
    }

    internal static bool TryParseRequest(ReadOnlySpan<byte> data, out string? session)
    {
        session = null;
        if (data.Length < 12 || !data[..8].SequenceEqual(ProtocolConstants.Magic)) return false;
        int length = BinaryPrimitives.ReadUInt16LittleEndian(data[10..]);
        if (length > data.Length - 12) return false;
        try { session = new UTF8Encoding(false, true).GetString(data.Slice(12, length)); }
        catch (DecoderFallbackException) { return false; }
        return true;
    }

    /// <summary>Broadcasts for <paramref name="session"/> and returns the answering server's control endpoint.</summary>
    public static Task<IPEndPoint> FindServerAsync(string session, IPAddress broadcast, IPAddress? local, Action<string> log, CancellationToken cancellationToken) =>
        FindServerAsync(session, broadcast, ProtocolConstants.DiscoveryPort, local, log, cancellationToken);

    /// <summary>Broadcasts for <paramref name="session"/> to UDP <paramref name="port"/> and returns the answering server's control endpoint.</summary>
    public static async Task<IPEndPoint> FindServerAsync(string session, IPAddress broadcast, int port, IPAddress? local, Action<string> log, CancellationToken cancellationToken)
    {
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { EnableBroadcast = true };
        udp.Bind(new IPEndPoint(local ?? IPAddress.Any, 0));
        var name = Encoding.UTF8.GetBytes(session);
        var request = new byte[12 + name.Length];
        ProtocolConstants.Magic.CopyTo(request);
        BinaryPrimitives.WriteUInt16LittleEndian(request.AsSpan(8), ProtocolConstants.Version);
        BinaryPrimitives.WriteUInt16LittleEndian(request.AsSpan(10), (ushort)name.Length);
        name.CopyTo(request, 12);
        var target = new IPEndPoint(broadcast, port);
        var buffer = new byte[64];
        var found = new List<IPEndPoint>();
        for (int attempt = 1; attempt <= Tries && found.Count == 0; attempt++)
        {
            await udp.SendToAsync(request, SocketFlags.None, target, cancellationToken).ConfigureAwait(false);
            // Collect every answer for a second: two servers answering for one session is an operator error worth stopping on.
            using var window = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            window.CancelAfter(TimeSpan.FromSeconds(1));
            try
            {
                while (true)
                {
                    var r = await udp.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(IPAddress.Any, 0), window.Token).ConfigureAwait(false);
                    var d = buffer.AsSpan(0, r.ReceivedBytes);
                    if (d.Length != 12 || !d[..8].SequenceEqual(ProtocolConstants.Magic)) continue;
                    var from = (IPEndPoint)r.RemoteEndPoint;
                    ushort version = BinaryPrimitives.ReadUInt16LittleEndian(d[8..]);
                    if (version != ProtocolConstants.Version)
                        throw new KaDeployException($"server {from.Address} of session '{session}' speaks protocol {version}, this client {ProtocolConstants.Version}");
                    var ep = new IPEndPoint(from.Address, BinaryPrimitives.ReadUInt16LittleEndian(d[10..]));
                    if (!found.Contains(ep)) found.Add(ep);
                }
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested) { }
            if (found.Count == 0) log($"no server answered for session '{session}' (try {attempt}/{Tries})");
        }
        return found.Count switch
        {
            0 => throw new KaDeployException($"no server answered for session '{session}' on {target} after {Tries} tries"),
            1 => found[0],
            _ => throw new KaDeployException($"{found.Count} servers answer for session '{session}' ({string.Join(", ", found)}): stop all but one"),
        };
    }
}
