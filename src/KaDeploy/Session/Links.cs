using System.Net;
using System.Net.Sockets;

namespace KaDeploy.Session;

/// <summary>Socket setup shared by control and data links.</summary>
public static class Links
{
    private const int TcpUserTimeout = 18; // Linux TCP_USER_TIMEOUT, see tcp(7)

    /// <summary>
    /// A dead peer (powered off, unplugged) never resets the connection; TCP_USER_TIMEOUT makes the
    /// kernel give up on data left unacknowledged that long, while a live but slow peer keeps
    /// acknowledging window probes and is never cut. Keep-alive covers idle control links.
    /// </summary>
    public static void Configure(Socket socket, TimeSpan deadPeerTimeout)
    {
        socket.NoDelay = true;
        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, 10);
        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, 5);
        socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount, 4);
        if (OperatingSystem.IsLinux())
            socket.SetRawSocketOption((int)SocketOptionLevel.Tcp, TcpUserTimeout,
                BitConverter.GetBytes((int)deadPeerTimeout.TotalMilliseconds));
    }

    /// <summary>Parses "HOST", "HOST:PORT", "[v6]:PORT".</summary>
    public static (string Host, int Port) ParseHostPort(string text, int defaultPort)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(text);
        if (IPEndPoint.TryParse(text, out var ep) && (ep.Port != 0 || !text.Contains(':') || text.Count(c => c == ':') > 1))
            return (ep.Address.ToString(), ep.Port == 0 ? defaultPort : ep.Port);
        int colon = text.LastIndexOf(':');
        if (colon > 0 && text.IndexOf(':') == colon)
        {
            if (!int.TryParse(text.AsSpan(colon + 1), out int port) || port is < 1 or > 65535)
                throw new KaDeployException($"bad port in '{text}'");
            return (text[..colon], port);
        }
        return (text, defaultPort);
    }

    /// <summary>Resolves a host name or address to an IPv4/IPv6 address.</summary>
    public static async Task<IPAddress> ResolveAsync(string host, CancellationToken cancellationToken)
    {
        if (IPAddress.TryParse(host, out var address)) return address;
        try
        {
            var all = await Dns.GetHostAddressesAsync(host, cancellationToken).ConfigureAwait(false);
            return all.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork) ?? all.First();
        }
        catch (SocketException e)
        {
            throw new KaDeployException($"cannot resolve '{host}': {e.Message}");
        }
    }

    /// <summary>Opens a TCP connection, optionally from a given local address.</summary>
    public static async Task<Socket> ConnectAsync(IPEndPoint remote, IPAddress? local, TimeSpan deadPeerTimeout, CancellationToken cancellationToken)
    {
        var socket = new Socket(remote.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (local is not null && !local.Equals(IPAddress.Any) && !local.Equals(IPAddress.IPv6Any))
                socket.Bind(new IPEndPoint(local, 0));
            Configure(socket, deadPeerTimeout);
            await socket.ConnectAsync(remote, cancellationToken).ConfigureAwait(false);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Listens on ADDRESS:PORT (0 = any free port) with a clear message when the port is taken.</summary>
    public static Socket Listen(IPAddress address, int port, string what)
    {
        var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Bind(new IPEndPoint(address, port));
            socket.Listen(512);
            return socket;
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new KaDeployException(e.SocketErrorCode == SocketError.AddressAlreadyInUse
                ? $"{what} port {address}:{port} is already in use (another ka-deploy server?)"
                : $"cannot listen on {address}:{port} for the {what}: {e.Message}");
        }
    }

    /// <summary>Runs <paramref name="action"/> with a timeout, turning the timeout into a one-line error.</summary>
    public static async Task<T> WithTimeout<T>(Func<CancellationToken, Task<T>> action, TimeSpan timeout, string what, CancellationToken cancellationToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        try
        {
            return await action(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new KaDeployException($"timed out after {timeout.TotalSeconds:0} s waiting for {what}");
        }
    }
}
