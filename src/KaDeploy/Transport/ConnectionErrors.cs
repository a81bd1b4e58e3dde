using System.Net.Sockets;
using KaDeploy.Protocol;

namespace KaDeploy.Transport;

/// <summary>
/// The one place that decides which exceptions mean "this link is gone" (as opposed to a bug), and
/// how to say so in one line. Reader and sender loops catch <c>when (ConnectionErrors.IsLinkFailure(e))</c>.
/// </summary>
public static class ConnectionErrors
{
    /// <summary>True for the ways a peer, a network or our own <see cref="Connection.Abort"/> ends a link.</summary>
    public static bool IsLinkFailure(Exception e) =>
        e is IOException or SocketException or ObjectDisposedException or ProtocolException or LinkLostException
        || (e is AggregateException a && a.InnerExceptions.All(IsLinkFailure));

    /// <summary>A short, operator-facing description: reset, refused, timed out, closed, or the message.</summary>
    public static string Describe(Exception e)
    {
        var socket = e as SocketException ?? e.InnerException as SocketException;
        if (socket is not null)
            return socket.SocketErrorCode switch
            {
                SocketError.ConnectionReset => "connection reset",
                SocketError.ConnectionRefused => "connection refused",
                SocketError.TimedOut => "timed out (no acknowledgement)",
                SocketError.HostUnreachable or SocketError.NetworkUnreachable or SocketError.HostDown => "unreachable",
                SocketError.OperationAborted or SocketError.Shutdown => "closed",
                _ => socket.Message,
            };
        return e switch
        {
            ObjectDisposedException => "closed",
            LinkLostException l => l.Message,
            _ => e.Message.ReplaceLineEndings(" "),
        };
    }
}

/// <summary>A link ended (by the peer, the network, or a decision of ours that carries the reason).</summary>
public sealed class LinkLostException(string message) : IOException(message);
