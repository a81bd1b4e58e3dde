using System.Net;
using System.Net.Sockets;

namespace KaDeploy.Transport;

/// <summary>
/// Links as in-process byte queues, for tests that run whole sessions without sockets. Every link is
/// kept in <see cref="Links"/> with its endpoints, so a test can find "the data link into node 3" and
/// break it on cue: <see cref="MemoryLink.Reset"/> (a crash: both ends see a reset), <see cref="MemoryLink.Vanish"/>
/// (a power cut: nothing more moves, nobody is told), <see cref="MemoryLink.Stall"/>/<see cref="MemoryLink.Resume"/>
/// (a stopped process), <see cref="MemoryLink.CorruptNextWrite"/>. Each direction holds at most
/// <see cref="WindowBytes"/>, so backpressure behaves as over TCP.
/// </summary>
public sealed class MemoryTransport : ITransport
{
    private readonly object _gate = new();
    private readonly Dictionary<IPEndPoint, MemoryListener> _listeners = [];
    private readonly List<MemoryLink> _links = [];
    private readonly HashSet<IPAddress> _downHosts = [];
    private int _nextPort = 40000;

    /// <summary>Bytes in flight per direction (a socket's buffers).</summary>
    public int WindowBytes { get; init; } = 256 * 1024;

    /// <summary>Every link opened so far.</summary>
    public IReadOnlyList<MemoryLink> Links { get { lock (_gate) return [.. _links]; } }

    /// <summary>Raised (synchronously, before the opener sees the connection) for each new link.</summary>
    public event Action<MemoryLink>? LinkOpened;

    /// <summary>Takes a host off the network: its links vanish and new connections to or from it never complete.</summary>
    public void TakeDown(IPAddress host)
    {
        lock (_gate) _downHosts.Add(host);
        foreach (var l in Links)
            if (l.Opener.Address.Equals(host) || l.Acceptor.Address.Equals(host)) l.Vanish();
    }

    /// <inheritdoc/>
    public async Task<Connection> ConnectAsync(IPEndPoint remote, IPAddress? local, CancellationToken cancellationToken)
    {
        MemoryListener? listener;
        IPEndPoint from;
        bool down;
        lock (_gate)
        {
            _listeners.TryGetValue(remote, out listener);
            if (listener is null) _listeners.TryGetValue(new IPEndPoint(IPAddress.Any, remote.Port), out listener);
            from = new IPEndPoint(local is null || local.Equals(IPAddress.Any) ? IPAddress.Loopback : local, _nextPort++);
            down = _downHosts.Contains(remote.Address) || _downHosts.Contains(from.Address);
        }
        if (down)
        {
            await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
        }
        if (listener is null) throw new SocketException((int)SocketError.ConnectionRefused);
        var link = new MemoryLink(from, remote, WindowBytes);
        lock (_gate) _links.Add(link);
        LinkOpened?.Invoke(link);
        if (!listener.Offer(link.AcceptorSide)) throw new SocketException((int)SocketError.ConnectionRefused);
        return link.OpenerSide;
    }

    /// <inheritdoc/>
    public IConnectionListener Listen(IPAddress address, int port, string what)
    {
        lock (_gate)
        {
            var ep = new IPEndPoint(address, port == 0 ? _nextPort++ : port);
            if (_listeners.ContainsKey(ep)) throw new KaDeployException($"{what} port {ep} is already in use (another ka-deploy server?)");
            var l = new MemoryListener(ep, () => { lock (_gate) _listeners.Remove(ep); });
            _listeners.Add(ep, l);
            return l;
        }
    }

    private sealed class MemoryListener(IPEndPoint endPoint, Action onDispose) : IConnectionListener
    {
        private readonly System.Threading.Channels.Channel<Connection> _pending = System.Threading.Channels.Channel.CreateUnbounded<Connection>();

        public IPEndPoint LocalEndPoint => endPoint;

        public bool Offer(Connection c) => _pending.Writer.TryWrite(c);

        public async ValueTask<Connection> AcceptAsync(CancellationToken cancellationToken)
        {
            try { return await _pending.Reader.ReadAsync(cancellationToken).ConfigureAwait(false); }
            catch (System.Threading.Channels.ChannelClosedException e) { throw new ObjectDisposedException("listener", e); }
        }

        public void Dispose()
        {
            onDispose();
            _pending.Writer.TryComplete();
        }
    }
}

/// <summary>One in-memory link: two connections joined by two byte queues, with faults on cue.</summary>
public sealed class MemoryLink
{
    private readonly ByteQueue _up;   // opener -> acceptor
    private readonly ByteQueue _down; // acceptor -> opener

    internal MemoryLink(IPEndPoint opener, IPEndPoint acceptor, int window)
    {
        Opener = opener;
        Acceptor = acceptor;
        _up = new ByteQueue(window);
        _down = new ByteQueue(window);
        OpenerSide = new MemoryConnection(this, _down, _up, opener, acceptor);
        AcceptorSide = new MemoryConnection(this, _up, _down, acceptor, opener);
    }

    /// <summary>The side that connected.</summary>
    public IPEndPoint Opener { get; }
    /// <summary>The side that accepted.</summary>
    public IPEndPoint Acceptor { get; }
    /// <summary>The opener's connection.</summary>
    public MemoryConnection OpenerSide { get; }
    /// <summary>The acceptor's connection.</summary>
    public MemoryConnection AcceptorSide { get; }
    /// <summary>Set by <see cref="Vanish"/>: closing either side tells the other nothing.</summary>
    public bool Vanished { get; private set; }

    /// <summary>A crash: both sides' reads and writes fail with "connection reset".</summary>
    public void Reset()
    {
        var e = new IOException("connection reset (injected)", new SocketException((int)SocketError.ConnectionReset));
        _up.Fail(e);
        _down.Fail(e);
    }

    /// <summary>A power cut or a cable pulled: nothing moves any more and no side is told.</summary>
    public void Vanish()
    {
        Vanished = true;
        _up.SetStalled(true);
        _down.SetStalled(true);
    }

    /// <summary>A stopped process: bytes stop moving in both directions until <see cref="Resume"/>.</summary>
    public void Stall()
    {
        _up.SetStalled(true);
        _down.SetStalled(true);
    }

    /// <summary>Ends a <see cref="Stall"/>.</summary>
    public void Resume()
    {
        _up.SetStalled(false);
        _down.SetStalled(false);
    }

    /// <summary>Flips one bit of the next chunk the opener (or acceptor) writes, at byte <paramref name="at"/> of it.</summary>
    public void CorruptNextWrite(bool fromOpener, int at) => (fromOpener ? _up : _down).CorruptNext(at);
}

/// <summary>One side of a <see cref="MemoryLink"/>.</summary>
public sealed class MemoryConnection : Connection
{
    private readonly MemoryLink _link;
    private readonly ByteQueue _inbound;
    private readonly ByteQueue _outbound;
    private readonly CancellationTokenSource _aborted = new();

    internal MemoryConnection(MemoryLink link, ByteQueue inbound, ByteQueue outbound, IPEndPoint local, IPEndPoint remote)
    {
        _link = link;
        _inbound = inbound;
        _outbound = outbound;
        LocalEndPoint = local;
        RemoteEndPoint = remote;
        Stream = new DuplexStream(this);
    }

    /// <inheritdoc/>
    public override Stream Stream { get; }
    /// <inheritdoc/>
    public override IPEndPoint RemoteEndPoint { get; }
    /// <inheritdoc/>
    public override IPEndPoint LocalEndPoint { get; }

    /// <inheritdoc/>
    public override void ShutdownSend()
    {
        if (!_link.Vanished) _outbound.CompleteWriting();
    }

    /// <inheritdoc/>
    protected override void CloseTransport()
    {
        _aborted.Cancel();
        if (_link.Vanished) return; // the peer hears nothing, as after a power cut
        _outbound.CompleteWriting(); // FIN once what was sent is read
        _inbound.Fail(new IOException("connection reset by peer", new SocketException((int)SocketError.ConnectionReset)));
    }

    private async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken ct)
    {
        if (_aborted.IsCancellationRequested) throw new ObjectDisposedException("connection", AbortReason);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, _aborted.Token);
        try { return await _inbound.ReadAsync(buffer, linked.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested) { throw new ObjectDisposedException("connection", AbortReason); }
    }

    private async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken ct)
    {
        if (_aborted.IsCancellationRequested) throw new ObjectDisposedException("connection", AbortReason);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(ct, _aborted.Token);
        try { await _outbound.WriteAsync(buffer, linked.Token).ConfigureAwait(false); }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested) { throw new ObjectDisposedException("connection", AbortReason); }
    }

    private sealed class DuplexStream(MemoryConnection c) : Stream
    {
        public override bool CanRead => true;
        public override bool CanWrite => true;
        public override bool CanSeek => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public override int Read(byte[] buffer, int offset, int count) => c.ReadAsync(buffer.AsMemory(offset, count), default).AsTask().GetAwaiter().GetResult();
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => c.ReadAsync(buffer, cancellationToken);
        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => c.ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
        public override void Write(byte[] buffer, int offset, int count) => c.WriteAsync(buffer.AsMemory(offset, count), default).AsTask().GetAwaiter().GetResult();
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => c.WriteAsync(buffer, cancellationToken);
        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => c.WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        protected override void Dispose(bool disposing)
        {
            if (disposing) c.Abort("closed");
            base.Dispose(disposing);
        }
    }
}

/// <summary>A bounded byte queue with async waits on both ends; one reader and one writer at a time.</summary>
internal sealed class ByteQueue(int capacity)
{
    private readonly object _gate = new();
    private readonly byte[] _buffer = new byte[capacity];
    private int _head, _count;
    private bool _writerDone, _stalled;
    private Exception? _error;
    private int _corruptAt = -1;
    private TaskCompletionSource? _readWaiter, _writeWaiter;

    public async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        while (!data.IsEmpty)
        {
            Task wait;
            lock (_gate)
            {
                if (_error is not null) throw new IOException(_error.Message, _error);
                if (_writerDone) throw new ObjectDisposedException("connection", "send side already shut down");
                int n = Math.Min(data.Length, _buffer.Length - _count);
                if (n > 0)
                {
                    for (int i = 0; i < n; i++)
                    {
                        byte b = data.Span[i];
                        if (i == _corruptAt) { b ^= 0x10; _corruptAt = -1; }
                        _buffer[(_head + _count + i) % _buffer.Length] = b;
                    }
                    _corruptAt = -1;
                    _count += n;
                    data = data[n..];
                    Wake(ref _readWaiter);
                    continue;
                }
                wait = (_writeWaiter ??= new(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
            }
            await wait.WaitAsync(ct).ConfigureAwait(false);
        }
    }

    public async ValueTask<int> ReadAsync(Memory<byte> into, CancellationToken ct)
    {
        if (into.IsEmpty) return 0;
        while (true)
        {
            Task wait;
            lock (_gate)
            {
                if (_error is not null) throw new IOException(_error.Message, _error);
                if (!_stalled && _count > 0)
                {
                    int n = Math.Min(into.Length, _count);
                    for (int i = 0; i < n; i++) into.Span[i] = _buffer[(_head + i) % _buffer.Length];
                    _head = (_head + n) % _buffer.Length;
                    _count -= n;
                    Wake(ref _writeWaiter);
                    return n;
                }
                if (!_stalled && _writerDone) return 0;
                wait = (_readWaiter ??= new(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
            }
            await wait.WaitAsync(ct).ConfigureAwait(false);
        }
    }

    public void CompleteWriting()
    {
        lock (_gate) { _writerDone = true; Wake(ref _readWaiter); }
    }

    public void Fail(Exception e)
    {
        lock (_gate)
        {
            _error ??= e;
            Wake(ref _readWaiter);
            Wake(ref _writeWaiter);
        }
    }

    public void SetStalled(bool stalled)
    {
        lock (_gate) { _stalled = stalled; Wake(ref _readWaiter); }
    }

    public void CorruptNext(int at)
    {
        lock (_gate) _corruptAt = at;
    }

    private static void Wake(ref TaskCompletionSource? waiter)
    {
        waiter?.TrySetResult();
        waiter = null;
    }
}
