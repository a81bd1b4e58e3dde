using KaDeploy.Transport;

namespace KaDeploy.Session;

/// <summary>
/// A node's link to its parent, from its first connect attempt to its end: while linking, the token the attempts
/// run under; once linked, the connection too. <see cref="Abort"/> is its one shutdown path, whatever stage it is
/// in, and the first reason given is kept: a Reattach, the server lost or the node done stops an attempt under way
/// and closes a link made, and a link made just after an abort is closed with that abort's reason.
/// Not thread-safe by itself: <see cref="DeployClient"/> calls <see cref="Linked"/> and <see cref="Abort"/> under
/// one lock, the one under which it also queues a Reattach, so that a link is never recorded between the two.
/// </summary>
internal sealed class UpstreamLink : IDisposable
{
    private readonly CancellationTokenSource _attempts;
    private Connection? _connection;
    private string? _abortReason;

    /// <summary>A link whose attempts also end with <paramref name="cancellationToken"/>.</summary>
    public UpstreamLink(CancellationToken cancellationToken) =>
        _attempts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);

    /// <summary>Cancelled when the link is aborted (or the node's run ends): the connect attempts and the hand-shake run under it.</summary>
    public CancellationToken Attempts => _attempts.Token;

    /// <summary>The connection, once linked and not aborted before.</summary>
    public Connection? Connection => _connection;

    /// <summary>Why the link was aborted, or null.</summary>
    public string? AbortReason => Volatile.Read(ref _abortReason);

    /// <summary>
    /// Records the connection the link was made over. False if the link was aborted first: the connection is then
    /// aborted with that reason, and the stream read from it ends at once with it.
    /// </summary>
    public bool Linked(Connection connection)
    {
        ArgumentNullException.ThrowIfNull(connection);
        _connection = connection;
        if (_abortReason is not { } why) return true;
        connection.Abort(why);
        return false;
    }

    /// <summary>Stops the link, whatever its stage: the attempts under way are cancelled and the connection, if any, aborted.</summary>
    public void Abort(string reason)
    {
        if (Interlocked.CompareExchange(ref _abortReason, reason, null) is not null) return;
        _connection?.Abort(reason);
        // CancelAsync runs the token's callbacks (a connect, a hand-shake read) on the thread pool, not under the
        // caller's lock. The source is not disposed yet: the client disposes a link only after taking it out of
        // the field its aborts find it in, under the same lock.
        _ = _attempts.CancelAsync();
    }

    /// <inheritdoc />
    public void Dispose() => _attempts.Dispose();
}
