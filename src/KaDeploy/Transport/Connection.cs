using System.Net;

namespace KaDeploy.Transport;

/// <summary>
/// One link between two peers (a control connection or a data link), whatever carries it. It has
/// one owner and one way down: <see cref="Abort"/> runs once, records why, closes the transport and
/// completes <see cref="Closed"/>; every later call is a no-op. The first reason is the one the log
/// and the report show, so a link torn down by a heartbeat timeout is never re-described as
/// "connection reset" by the reader loop that noticed the close afterwards.
/// </summary>
public abstract class Connection : IAsyncDisposable
{
    private readonly TaskCompletionSource<string> _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _aborted;

    /// <summary>Bytes in both directions.</summary>
    public abstract Stream Stream { get; }

    /// <summary>The peer's address and port.</summary>
    public abstract IPEndPoint RemoteEndPoint { get; }

    /// <summary>This side's address and port.</summary>
    public abstract IPEndPoint LocalEndPoint { get; }

    /// <summary>Why the connection was shut down, or null while it is up.</summary>
    public string? AbortReason { get; private set; }

    /// <summary>Completes with the reason once the connection is shut down.</summary>
    public Task<string> Closed => _closed.Task;

    /// <summary>True once <see cref="Abort"/> ran.</summary>
    public bool IsAborted => Volatile.Read(ref _aborted) != 0;

    /// <summary>Shuts the connection down, once; returns false if it was already down (the first reason stays).</summary>
    public bool Abort(string reason)
    {
        if (Interlocked.Exchange(ref _aborted, 1) != 0) return false;
        AbortReason = reason;
        try { CloseTransport(); }
        finally { _closed.TrySetResult(reason); }
        return true;
    }

    /// <summary>Half-close: tells the peer nothing more will be sent (TCP FIN), keeps receiving.</summary>
    public abstract void ShutdownSend();

    /// <summary>Closes the socket or pipe; called exactly once, by <see cref="Abort"/>.</summary>
    protected abstract void CloseTransport();

    /// <summary>Same as <see cref="Abort"/> with "closed" if nothing else was said before.</summary>
    public ValueTask DisposeAsync()
    {
        Abort("closed");
        GC.SuppressFinalize(this);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc/>
    public override string ToString() => $"{LocalEndPoint} -> {RemoteEndPoint}{(AbortReason is { } r ? $" (down: {r})" : "")}";
}

/// <summary>A listening endpoint of a transport.</summary>
public interface IConnectionListener : IDisposable
{
    /// <summary>Address and port actually bound.</summary>
    IPEndPoint LocalEndPoint { get; }

    /// <summary>Waits for the next connection. Throws <see cref="ObjectDisposedException"/> or <see cref="OperationCanceledException"/> once closed.</summary>
    ValueTask<Connection> AcceptAsync(CancellationToken cancellationToken);
}

/// <summary>
/// What the session code opens links with: TCP in production, in-memory pipes (optionally faulty)
/// in unit tests. Nothing above this seam touches a socket.
/// </summary>
public interface ITransport
{
    /// <summary>Opens a connection to <paramref name="remote"/>, from <paramref name="local"/> if given.</summary>
    Task<Connection> ConnectAsync(IPEndPoint remote, IPAddress? local, CancellationToken cancellationToken);

    /// <summary>Listens on ADDRESS:PORT (0 = any free port); <paramref name="what"/> names it in errors.</summary>
    IConnectionListener Listen(IPAddress address, int port, string what);
}
