using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using KaDeploy.Protocol;
using KaDeploy.Security;

namespace KaDeploy.Session;

/// <summary>
/// Finding a server by session name, as the original did: the client broadcasts the name over UDP
/// (port 4957) and a server of that session answers with its control port. One try a second until the client's
/// connect timeout: nodes that boot before the server keep looking (the original gave up after ten).
/// Request: <c>magic | u16 version | u16 length | session</c>; answer: <c>magic | u16 version | u16 control port</c>.
/// Several servers on one host share the port (SO_REUSEADDR and SO_REUSEPORT): the kernel hands a broadcast to
/// every one of them and each answers only for its own session. (A request sent to one host's unicast address
/// reaches only one of the sockets sharing the port: discovery across several servers on a host needs broadcast.)
/// Keyed (issue 9): the request ends with a 16-byte nonce and a keyed server's answer ends with
/// <see cref="DiscoveryAuthenticator.ComputeTag"/> over it; a keyed client ignores answers whose tag does not
/// verify (a rogue server, or one of another key), so they are neither followed nor counted as a second server.
/// </summary>
public static class Discovery
{
    private const int SolSocket = 1, SoReusePort = 15; // <asm-generic/socket.h>

    /// <summary>Answers discovery requests for <paramref name="session"/> until cancelled. Never sends unprompted.</summary>
    public static Task RespondAsync(Socket udp, string session, int controlPort, Action<string> log, CancellationToken cancellationToken) =>
        RespondAsync(udp, session, controlPort, null, log, cancellationToken);

    /// <summary>
    /// Answers discovery requests for <paramref name="session"/> until cancelled. With <paramref name="replyFrom"/> (the
    /// server's --bind address) answers leave from that address, so the client connects to the address the control
    /// port listens on, whatever interface the broadcast came in on.
    /// </summary>
    public static Task RespondAsync(Socket udp, string session, int controlPort, IPAddress? replyFrom, Action<string> log, CancellationToken cancellationToken) =>
        RespondAsync(udp, session, controlPort, replyFrom, null, log, cancellationToken);

    /// <summary>As above; with <paramref name="key"/> a request's nonce is answered with the key's tag, so keyed clients can tell this server from a rogue one.</summary>
    public static async Task RespondAsync(Socket udp, string session, int controlPort, IPAddress? replyFrom, PresharedKey? key, Action<string> log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(udp);
        using var replySocket = replyFrom is null || replyFrom.Equals(IPAddress.Any) || replyFrom.AddressFamily != AddressFamily.InterNetwork
            ? null : new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        replySocket?.Bind(new IPEndPoint(replyFrom!, 0));
        var sender = replySocket ?? udp;
        var buffer = new byte[1024];
        var reply = new byte[ProtocolConstants.Magic.Length + 4 + DiscoveryAuthenticator.TagSize];
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
            if (TryParseRequest(buffer.AsSpan(0, r.ReceivedBytes), out string? asked, out var nonce) && asked == session)
            {
                // An unkeyed request (no nonce) still gets the plain answer: its node is then refused by the
                // handshake in one line ("requires a key"), which says more than silence would.
                int length = 12;
                if (key is not null && nonce.Length == DiscoveryAuthenticator.NonceSize)
                {
                    DiscoveryAuthenticator.ComputeTag(key, buffer.AsSpan(r.ReceivedBytes - nonce.Length, nonce.Length), session, controlPort, reply.AsSpan(12));
                    length += DiscoveryAuthenticator.TagSize;
                }
                try { await sender.SendToAsync(reply.AsMemory(0, length), SocketFlags.None, r.RemoteEndPoint, cancellationToken).ConfigureAwait(false); }
                catch (SocketException e) { log($"discovery: cannot answer {r.RemoteEndPoint}: {e.Message}"); }
            }
        }
    }

    /// <summary>Binds the discovery responder on the default port.</summary>
    public static Socket? BindResponder(IPAddress bind, Action<string> log) => BindResponder(bind, ProtocolConstants.DiscoveryPort, log);

    /// <summary>
    /// Binds the discovery responder socket on every IPv4 address (a broadcast reaches only sockets bound to the
    /// wildcard, so binding to --bind's address would hear no request), shared with other servers on this host;
    /// null (with a logged reason) when the port cannot be had.
    /// </summary>
    public static Socket? BindResponder(IPAddress bind, int port, Action<string> log)
    {
        ArgumentNullException.ThrowIfNull(bind);
        ArgumentNullException.ThrowIfNull(log);
        var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            udp.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            udp.SetRawSocketOption(SolSocket, SoReusePort, BitConverter.GetBytes(1));
            udp.Bind(new IPEndPoint(IPAddress.Any, port));
            return udp;
        }
        catch (SocketException e)
        {
            udp.Dispose();
            log($"warning: session discovery disabled, UDP port {port} unavailable ({e.Message}); clients need --server");
            return null;
        }
    }

    internal static bool TryParseRequest(ReadOnlySpan<byte> data, out string? session) => TryParseRequest(data, out session, out _);

    /// <summary>Parses a request; <paramref name="nonce"/> is what follows the session name (a keyed client's nonce, else empty).</summary>
    internal static bool TryParseRequest(ReadOnlySpan<byte> data, out string? session, out ReadOnlySpan<byte> nonce)
    {
        session = null;
        nonce = default;
        if (data.Length < 12 || !data[..8].SequenceEqual(ProtocolConstants.Magic)) return false;
        int length = BinaryPrimitives.ReadUInt16LittleEndian(data[10..]);
        if (length > data.Length - 12) return false;
        try { session = new UTF8Encoding(false, true).GetString(data.Slice(12, length)); }
        catch (DecoderFallbackException) { return false; }
        nonce = data[(12 + length)..];
        return true;
    }

    /// <summary>Broadcasts for <paramref name="session"/> on the default port, ten tries.</summary>
    public static Task<IPEndPoint> FindServerAsync(string session, IPAddress broadcast, IPAddress? local, Action<string> log, CancellationToken cancellationToken) =>
        FindServerAsync(session, broadcast, ProtocolConstants.DiscoveryPort, local, TimeSpan.FromSeconds(10), log, cancellationToken);

    /// <summary>
    /// Broadcasts for <paramref name="session"/> once a second until a server answers or <paramref name="timeout"/> has
    /// passed, and returns the answering server's control endpoint.
    /// </summary>
    public static Task<IPEndPoint> FindServerAsync(string session, IPAddress broadcast, int port, IPAddress? local, TimeSpan timeout,
        Action<string> log, CancellationToken cancellationToken) =>
        FindServerAsync(session, broadcast, port, local, timeout, null, log, cancellationToken);

    /// <summary>As above; with <paramref name="key"/> only answers signed with that key for this request's nonce count.</summary>
    public static async Task<IPEndPoint> FindServerAsync(string session, IPAddress broadcast, int port, IPAddress? local, TimeSpan timeout,
        PresharedKey? key, Action<string> log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(broadcast);
        ArgumentNullException.ThrowIfNull(log);
        using var udp = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { EnableBroadcast = true };
        udp.Bind(new IPEndPoint(local ?? IPAddress.Any, 0));
        var name = Encoding.UTF8.GetBytes(session);
        int nonceSize = key is null ? 0 : DiscoveryAuthenticator.NonceSize;
        var request = new byte[12 + name.Length + nonceSize];
        ProtocolConstants.Magic.CopyTo(request);
        BinaryPrimitives.WriteUInt16LittleEndian(request.AsSpan(8), ProtocolConstants.Version);
        BinaryPrimitives.WriteUInt16LittleEndian(request.AsSpan(10), (ushort)name.Length);
        name.CopyTo(request, 12);
        var target = new IPEndPoint(broadcast, port);
        var buffer = new byte[64];
        var found = new List<IPEndPoint>();
        var ignored = new HashSet<IPAddress>();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int attempt = 0;
        while (found.Count == 0 && (attempt == 0 || clock.Elapsed < timeout))
        {
            attempt++;
            // A fresh nonce per request: an answer recorded from an earlier exchange does not verify.
            if (key is not null) DiscoveryAuthenticator.NewNonce().CopyTo(request, 12 + name.Length);
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
                    if ((d.Length != 12 && d.Length != 12 + DiscoveryAuthenticator.TagSize) || !d[..8].SequenceEqual(ProtocolConstants.Magic)) continue;
                    var from = (IPEndPoint)r.RemoteEndPoint;
                    if (key is not null && (d.Length != 12 + DiscoveryAuthenticator.TagSize
                        || !DiscoveryAuthenticator.Verify(key, request.AsSpan(12 + name.Length), session, BinaryPrimitives.ReadUInt16LittleEndian(d[10..]), d[12..])))
                    {
                        if (ignored.Add(from.Address)) log($"ignored a discovery answer from {from.Address}: not signed with this key");
                        continue;
                    }
                    ushort version = BinaryPrimitives.ReadUInt16LittleEndian(d[8..]);
                    if (version != ProtocolConstants.Version)
                        throw new KaDeployException($"server {from.Address} of session '{session}' speaks protocol {version}, this client {ProtocolConstants.Version}");
                    var ep = new IPEndPoint(from.Address, BinaryPrimitives.ReadUInt16LittleEndian(d[10..]));
                    if (!found.Contains(ep)) found.Add(ep);
                }
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested) { }
            // Once a second for the first ten tries, then once a minute: a node waiting for its server says so, without flooding the console.
            if (found.Count == 0 && (attempt <= 10 || attempt % 60 == 0))
                log($"no server answered for session '{session}' on {target} yet (try {attempt}, giving up after {timeout.TotalSeconds:0} s)");
        }
        return found.Count switch
        {
            0 => throw new KaDeployException($"no server answered for session '{session}' on {target} within {timeout.TotalSeconds:0} s ({attempt} tries)"),
            1 => found[0],
            _ => throw new KaDeployException($"{found.Count} servers answer for session '{session}' ({string.Join(", ", found)}): stop all but one"),
        };
    }
}
