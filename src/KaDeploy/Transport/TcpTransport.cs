using System.Net;
using System.Net.Sockets;
using KaDeploy.Session;

namespace KaDeploy.Transport;

/// <summary>Real sockets: keep-alive, TCP_USER_TIMEOUT and no Nagle on every link (see <see cref="Links.Configure"/>).</summary>
public sealed class TcpTransport(TimeSpan deadPeerTimeout) : ITransport
{
    /// <summary>TCP with the given TCP_USER_TIMEOUT.</summary>
    public TimeSpan DeadPeerTimeout { get; } = deadPeerTimeout;

    /// <inheritdoc/>
    public async Task<Connection> ConnectAsync(IPEndPoint remote, IPAddress? local, CancellationToken cancellationToken)
    {
        var socket = await Links.ConnectAsync(remote, local, DeadPeerTimeout, cancellationToken).ConfigureAwait(false);
        return new TcpConnection(socket);
    }

    /// <inheritdoc/>
    public IConnectionListener Listen(IPAddress address, int port, string what) => new TcpListener(Links.Listen(address, port, what), DeadPeerTimeout);

    private sealed class TcpListener(Socket socket, TimeSpan deadPeerTimeout) : IConnectionListener
    {
        public IPEndPoint LocalEndPoint => (IPEndPoint)socket.LocalEndPoint!;

        public async ValueTask<Connection> AcceptAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                Socket accepted;
                try { accepted = await socket.AcceptAsync(cancellationToken).ConfigureAwait(false); }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.OperationAborted) { throw new ObjectDisposedException("listener", e); }
                catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionAborted or SocketError.ConnectionReset) { continue; }
                try
                {
                    Links.Configure(accepted, deadPeerTimeout);
                    return new TcpConnection(accepted);
                }
                catch (SocketException) { accepted.Dispose(); } // reset between accept and setup
            }
        }

        public void Dispose() => socket.Dispose();
    }
}

/// <summary>A TCP link. The socket is closed by <see cref="Connection.Abort"/> only.</summary>
public sealed class TcpConnection : Connection
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;

    /// <summary>Takes ownership of a connected socket.</summary>
    public TcpConnection(Socket socket)
    {
        ArgumentNullException.ThrowIfNull(socket);
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: false);
        RemoteEndPoint = Unmap((IPEndPoint)socket.RemoteEndPoint!);
        LocalEndPoint = Unmap((IPEndPoint)socket.LocalEndPoint!);
    }

    private static IPEndPoint Unmap(IPEndPoint e) => e.Address.IsIPv4MappedToIPv6 ? new IPEndPoint(e.Address.MapToIPv4(), e.Port) : e;

    /// <inheritdoc/>
    public override Stream Stream => _stream;
    /// <inheritdoc/>
    public override IPEndPoint RemoteEndPoint { get; }
    /// <inheritdoc/>
    public override IPEndPoint LocalEndPoint { get; }

    /// <inheritdoc/>
    public override void ShutdownSend()
    {
        try { _socket.Shutdown(SocketShutdown.Send); }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }

    /// <inheritdoc/>
    protected override void CloseTransport()
    {
        // Shutdown first so a peer blocked in a read sees FIN now, then close (which also wakes our own
        // pending reads and writes: that is how a write stuck on a hung peer is released).
        try { _socket.Shutdown(SocketShutdown.Both); } catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        _stream.Dispose();
        _socket.Dispose();
    }
}
