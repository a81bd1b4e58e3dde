using System.Net;
using KaDeploy.Protocol;
using KaDeploy.Transport;

namespace KaDeploy.Security;

/// <summary>
/// The session's handshake step (docs/protocol.md section 2) at the transport's hook: every
/// connection, opened or accepted, runs <see cref="Handshake"/> before any session message. With a key
/// the result is an <see cref="AuthenticatedConnection"/> whose control frames are sealed; without one
/// the same exchange runs unkeyed (so a keyed peer and an unkeyed one refuse each other in one line).
/// </summary>
public sealed class KeyedHandshake(PresharedKey? key) : IConnectionHandshake
{
    /// <summary>The pre-shared key, or null for an unkeyed session.</summary>
    public PresharedKey? Key { get; } = key;

    /// <inheritdoc/>
    public async ValueTask<Connection> OpenAsync(Connection connection, ChannelKind kind, string session, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        var result = await Handshake.OpenAsync(connection.Stream, (HandshakeChannel)kind, session, Key,
            $"{Describe(kind, opener: true)} {connection.RemoteEndPoint}", cancellationToken).ConfigureAwait(false);
        return new AuthenticatedConnection(connection, result.Cipher);
    }

    /// <inheritdoc/>
    public async ValueTask<(Connection Connection, ChannelKind Kind)> AcceptAsync(Connection connection, ChannelKind expected, string session, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        // On a control port the Hello checks the session and names it in the refusal ("not this server's
        // session"); a data port takes links of its own session only.
        var result = await Handshake.AcceptAsync(connection.Stream, Key, expected == ChannelKind.Data ? session : null,
            $"{Describe(expected, opener: false)} {connection.RemoteEndPoint}", cancellationToken).ConfigureAwait(false);
        var kind = (ChannelKind)result.Channel;
        // A control port also takes `go`; a data port takes data links only.
        if (expected == ChannelKind.Data && kind != ChannelKind.Data)
        {
            result.Cipher?.Dispose();
            throw new HandshakeException($"{connection.RemoteEndPoint} opened a {kind} channel on a data port");
        }
        return (new AuthenticatedConnection(connection, result.Cipher), kind);
    }

    private static string Describe(ChannelKind kind, bool opener) => (kind, opener) switch
    {
        (ChannelKind.Data, true) => "parent",
        (ChannelKind.Data, false) => "child",
        (_, true) => "server",
        _ => "node",
    };
}

/// <summary>A connection that passed the handshake; its control frames are sealed with <see cref="Cipher"/> when keyed.</summary>
public sealed class AuthenticatedConnection(Connection inner, ControlCipher? cipher) : Connection
{
    /// <summary>Seals this side's control frames (null: unkeyed).</summary>
    public ControlCipher? Cipher { get; } = cipher;

    /// <inheritdoc/>
    public override Stream Stream => inner.Stream;
    /// <inheritdoc/>
    public override IPEndPoint RemoteEndPoint => inner.RemoteEndPoint;
    /// <inheritdoc/>
    public override IPEndPoint LocalEndPoint => inner.LocalEndPoint;
    /// <inheritdoc/>
    public override void ShutdownSend() => inner.ShutdownSend();
    /// <inheritdoc/>
    protected override void CloseTransport() => inner.Abort(AbortReason ?? "closed");
}

/// <summary>Control channels over connections, sealed when the connection's handshake was keyed.</summary>
public static class ConnectionChannels
{
    /// <summary>A control channel on <paramref name="connection"/>: sealed if it is an authenticated keyed connection.</summary>
    public static ControlChannel OpenControlChannel(this Connection connection)
    {
        ArgumentNullException.ThrowIfNull(connection);
        return new ControlChannel(connection.Stream, (connection as AuthenticatedConnection)?.Cipher);
    }
}
