using System.Net;
using System.Net.Sockets;

namespace KaDeploy.Tests.TestSupport;

/// <summary>What a <see cref="FaultProxy"/> does to the downstream bytes (target → connecting side) at <see cref="Fault.Offset"/>.</summary>
public enum FaultKind
{
    /// <summary>Pass everything through (record only).</summary>
    None,
    /// <summary>XOR the byte at the offset with 0x5A.</summary>
    Flip,
    /// <summary>Leave out <see cref="Fault.Length"/> bytes from the offset.</summary>
    Drop,
    /// <summary>Send <see cref="Fault.Length"/> bytes from the offset twice.</summary>
    Duplicate,
    /// <summary>Swap the <see cref="Fault.Length"/> bytes at the offset with the <see cref="Fault.Length"/> bytes after them.</summary>
    Reorder,
    /// <summary>Forward nothing from the offset on until <see cref="FaultProxy.Release"/> (or the proxy is disposed).</summary>
    Stall,
    /// <summary>Reset both connections (RST, SO_LINGER 0) once the offset is reached.</summary>
    Reset,
    /// <summary>Close the downstream cleanly (FIN) once the offset is reached: a stream cut that looks like an orderly end.</summary>
    Cut,
}

/// <summary>One fault, at a byte offset of the downstream direction of the first connection.</summary>
public sealed record Fault(FaultKind Kind, long Offset = 0, int Length = 1)
{
    /// <summary>No fault: a recording pass-through.</summary>
    public static Fault None { get; } = new(FaultKind.None);

    /// <summary>Bytes of the downstream stream the fault needs to have in hand before it acts.</summary>
    internal int Window => Kind switch
    {
        FaultKind.Flip => 1,
        FaultKind.Drop or FaultKind.Duplicate => Length,
        FaultKind.Reorder => 2 * Length,
        _ => 0,
    };
}

/// <summary>
/// A TCP proxy for tests, on a loopback address and port 0 (or a port the test names), in front of a
/// real peer: everything the connecting side sends goes to the target as it is; what the target sends
/// back (the downstream: a parent's frames to its child) is recorded and, on the first connection,
/// broken as the <see cref="Fault"/> says. Later connections pass through untouched. Every byte the
/// connecting side actually got is in <see cref="Delivered"/>, so a test can say what a child received.
/// </summary>
public sealed class FaultProxy : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly IPEndPoint _target;
    private readonly Fault _fault;
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _fired = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly List<Task> _pumps = [];
    private readonly MemoryStream _delivered = new();
    private readonly Task _accepting;
    private int _connections;

    /// <param name="listen">Where to listen; port 0 = any free port (read it back from <see cref="EndPoint"/>).</param>
    /// <param name="target">The real peer.</param>
    /// <param name="fault">What to break in the downstream direction of the first connection.</param>
    public FaultProxy(IPEndPoint listen, IPEndPoint target, Fault? fault = null)
        : this(Bind(listen), target, fault)
    {
    }

    /// <summary>
    /// Starts listening on a socket the test bound earlier (connections to a bound socket that does
    /// not listen yet are refused): a peer that is "not up yet" at a port nobody else can take meanwhile.
    /// </summary>
    public FaultProxy(Socket bound, IPEndPoint target, Fault? fault = null)
    {
        _target = target;
        _fault = fault ?? Fault.None;
        _listener = bound;
        try
        {
            _listener.Listen(16);
        }
        catch
        {
            _listener.Dispose();
            throw;
        }
        _accepting = AcceptAsync();
    }

    /// <summary>A TCP socket bound to <paramref name="at"/> (port 0 = any free port), not yet listening.</summary>
    public static Socket Bind(IPEndPoint at)
    {
        var socket = new Socket(at.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            socket.Bind(at);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Where the connecting side must connect.</summary>
    public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndPoint!;

    /// <summary>Completes when the fault has acted (for a stall: when the stall began).</summary>
    public Task Fired => _fired.Task;

    /// <summary>Connections accepted so far.</summary>
    public int Connections => Volatile.Read(ref _connections);

    /// <summary>Every downstream byte the connecting side was sent, after the fault, over all connections.</summary>
    public byte[] Delivered
    {
        get { lock (_delivered) return _delivered.ToArray(); }
    }

    /// <summary>Ends a <see cref="FaultKind.Stall"/>: what was held back flows again.</summary>
    public void Release() => _released.TrySetResult();

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try { client = await _listener.AcceptAsync(_stop.Token); }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException) { return; }
            int n = Interlocked.Increment(ref _connections);
            lock (_pumps) _pumps.Add(ServeAsync(client, n == 1 ? _fault : Fault.None));
        }
    }

    private async Task ServeAsync(Socket client, Fault fault)
    {
        using var _ = client;
        using var server = new Socket(_target.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            await server.ConnectAsync(_target, _stop.Token);
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException)
        {
            Abort(client);
            return;
        }
        client.NoDelay = server.NoDelay = true;
        var up = PumpUpAsync(client, server);
        var down = PumpDownAsync(server, client, fault);
        // A pump that fails (a reset from either side) takes both connections with it, as a dead middle box would.
        if (await Task.WhenAny(up, down) is { IsFaulted: true })
        {
            Abort(client);
            Abort(server);
        }
        await Task.WhenAll(Quiet(up), Quiet(down));
    }

    private static async Task Quiet(Task t)
    {
        try { await t; }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException or IOException) { }
    }

    // Connecting side → target, untouched.
    private async Task PumpUpAsync(Socket from, Socket to)
    {
        var buffer = new byte[16384];
        while (true)
        {
            int n = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
            if (n == 0)
            {
                to.Shutdown(SocketShutdown.Send);
                return;
            }
            await SendAllAsync(to, buffer.AsMemory(0, n));
        }
    }

    // Target → connecting side, with the fault applied at its offset.
    private async Task PumpDownAsync(Socket from, Socket to, Fault fault)
    {
        var buffer = new byte[16384];
        long position = 0; // downstream bytes read from the target so far
        bool done = fault.Kind == FaultKind.None;
        var window = new List<byte>(fault.Window);
        while (true)
        {
            int n = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
            if (n == 0)
            {
                if (window.Count > 0) await DeliverAsync(to, window.ToArray()); // the stream ended inside the window: pass it on as it is
                to.Shutdown(SocketShutdown.Send);
                return;
            }
            var chunk = buffer.AsMemory(0, n);
            if (done)
            {
                await DeliverAsync(to, chunk);
                position += n;
                continue;
            }
            // Up to the offset: as it is.
            int before = (int)Math.Clamp(fault.Offset - position, 0, n);
            if (before > 0) await DeliverAsync(to, chunk[..before]);
            position += before;
            chunk = chunk[before..];
            if (chunk.IsEmpty && position < fault.Offset) continue;
            // At the offset: gather the window, then act.
            int take = Math.Min(fault.Window - window.Count, chunk.Length);
            window.AddRange(chunk[..take].ToArray());
            position += take;
            chunk = chunk[take..];
            if (window.Count < fault.Window) continue;
            done = true;
            if (!await ActAsync(from, to, fault, [.. window])) return;
            window.Clear();
            if (!chunk.IsEmpty) await DeliverAsync(to, chunk);
            position += chunk.Length;
        }
    }

    // Applies the fault to the gathered window; false when the connection is finished.
    private async Task<bool> ActAsync(Socket from, Socket to, Fault fault, byte[] window)
    {
        // Fired before the first broken byte leaves: the peer may hang up on it before the rest is sent.
        _fired.TrySetResult();
        switch (fault.Kind)
        {
            case FaultKind.Flip:
                window[0] ^= 0x5A;
                await DeliverAsync(to, window);
                break;
            case FaultKind.Drop:
                break;
            case FaultKind.Duplicate:
                await DeliverAsync(to, window);
                await DeliverAsync(to, window);
                break;
            case FaultKind.Reorder:
                await DeliverAsync(to, window.AsMemory(fault.Length));
                await DeliverAsync(to, window.AsMemory(0, fault.Length));
                break;
            case FaultKind.Stall:
                await _released.Task.WaitAsync(_stop.Token);
                return true;
            case FaultKind.Reset:
                Abort(to);
                Abort(from);
                return false;
            case FaultKind.Cut:
                to.Shutdown(SocketShutdown.Send);
                from.Close();
                return false;
        }
        return true;
    }

    private async Task DeliverAsync(Socket to, ReadOnlyMemory<byte> bytes)
    {
        lock (_delivered) _delivered.Write(bytes.Span);
        await SendAllAsync(to, bytes);
    }

    private async Task SendAllAsync(Socket to, ReadOnlyMemory<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            int sent = await to.SendAsync(bytes, SocketFlags.None, _stop.Token);
            bytes = bytes[sent..];
        }
    }

    private static void Abort(Socket s)
    {
        try
        {
            s.LingerState = new LingerOption(true, 0);
            s.Close();
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        await _accepting;
        Task[] pumps;
        lock (_pumps) pumps = [.. _pumps];
        await Task.WhenAll(pumps);
        _stop.Dispose();
    }
}
