namespace KaDeploy.Transport;

/// <summary>What a connection is for; the first thing both sides agree on.</summary>
public enum ChannelKind : byte
{
    /// <summary>Node to server: registration, plan, heartbeats, reports.</summary>
    Control = 1,
    /// <summary>Child to parent: frames of the wire stream.</summary>
    Data = 2,
    /// <summary>`ka-deploy go`.</summary>
    Go = 3,
}

/// <summary>
/// The step that runs on every connection right after connect (opener) or accept (acceptor), before any
/// session message: the place for the v2 handshake (key proof, session name, derived keys; see
/// docs/protocol.md section 2). It may return a different connection (one whose stream seals and opens
/// frames). Throwing refuses the connection; the session then logs the message and aborts the link.
/// </summary>
public interface IConnectionHandshake
{
    /// <summary>Runs on the side that connected.</summary>
    ValueTask<Connection> OpenAsync(Connection connection, ChannelKind kind, string session, CancellationToken cancellationToken);

    /// <summary>Runs on the side that accepted; returns what kind of channel the opener asked for.</summary>
    ValueTask<(Connection Connection, ChannelKind Kind)> AcceptAsync(Connection connection, ChannelKind expected, string session, CancellationToken cancellationToken);
}

/// <summary>
/// The v1 behaviour: no handshake byte on the wire; the session's own hellos (Hello, DataHello) carry
/// version, session and link key. Replaced by the keyed handshake when one is configured.
/// </summary>
public sealed class NoHandshake : IConnectionHandshake
{
    /// <summary>The shared instance.</summary>
    public static NoHandshake Instance { get; } = new();

    /// <inheritdoc/>
    public ValueTask<Connection> OpenAsync(Connection connection, ChannelKind kind, string session, CancellationToken cancellationToken) =>
        ValueTask.FromResult(connection);

    /// <inheritdoc/>
    public ValueTask<(Connection Connection, ChannelKind Kind)> AcceptAsync(Connection connection, ChannelKind expected, string session, CancellationToken cancellationToken) =>
        ValueTask.FromResult((connection, expected));
}
