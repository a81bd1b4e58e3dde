using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;

namespace KaDeploy.Session;

/// <summary>
/// Accepts the data links of a node's children (the server's or a client's) and runs one
/// <see cref="ChildSender"/> per child. A child proves it belongs to the session with the link key
/// from its plan and must be one of the children the plan gave this node; anything else gets one
/// line in the log and a closed socket. A child may resume from any offset still in the ring.
/// </summary>
internal sealed class ChildLinks
{
    private static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(10);
    private readonly Socket _listener;
    private readonly RelayRing _ring;
    private readonly byte[] _key;
    private readonly HashSet<int> _expected;
    private readonly TimeSpan _deadPeerTimeout;
    private readonly Action<string> _log;
    private readonly Action<int, string> _childLost;
    private readonly List<Task> _senders = [];
    private readonly object _gate = new();

    public ChildLinks(Socket listener, RelayRing ring, byte[] key, IEnumerable<int> expected, TimeSpan deadPeerTimeout,
        Action<string> log, Action<int, string> childLost)
    {
        _listener = listener;
        _ring = ring;
        _key = key;
        _expected = [.. expected];
        _deadPeerTimeout = deadPeerTimeout;
        _log = log;
        _childLost = childLost;
    }

    /// <summary>Accepts until cancelled.</summary>
    public async Task AcceptAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            Socket socket;
            try { socket = await _listener.AcceptAsync(ct).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            catch (ObjectDisposedException) { return; }
            catch (SocketException e) when (ct.IsCancellationRequested || e.SocketErrorCode == SocketError.OperationAborted) { return; }
            catch (SocketException e) { _log($"data accept failed: {e.Message}"); continue; }
            _ = HandshakeAsync(socket, ct);
        }
    }

    /// <summary>Waits for every sender started so far to finish (each ends at the End frame or at its link's failure).</summary>
    public Task WhenSendersDoneAsync()
    {
        lock (_gate) return Task.WhenAll(_senders);
    }

    private async Task HandshakeAsync(Socket socket, CancellationToken ct)
    {
        var remote = socket.RemoteEndPoint as IPEndPoint;
        var stream = new NetworkStream(socket, ownsSocket: true);
        var channel = new ControlChannel(stream);
        try
        {
            Links.Configure(socket, _deadPeerTimeout);
            var hello = await Links.WithTimeout(t => channel.ExpectAsync<DataHello>(t), HandshakeTimeout, "a data-link hello", ct).ConfigureAwait(false);
            string? refusal =
                hello.Version != ProtocolConstants.Version ? $"protocol version {hello.Version}, expected {ProtocolConstants.Version}" :
                !CryptographicOperations.FixedTimeEquals(hello.LinkKey, _key) ? "wrong link key (not of this session)" :
                !_expected.Contains(hello.NodeId) ? $"node {hello.NodeId} is not a child of this node" : null;
            RingCursor? cursor = null;
            if (refusal is null)
            {
                long sequence = hello.ResumeOffset == 0 ? 0 : _ring.FindSequence(hello.ResumeOffset) ?? -1;
                try { cursor = _ring.Attach($"child {hello.NodeId}", sequence); }
                catch (KaDeployException e) { refusal = $"cannot resume at offset {hello.ResumeOffset}: {e.Message}"; }
            }
            if (refusal is not null || cursor is null)
            {
                _log($"refused data link from {remote}: {refusal}");
                await channel.SendAsync(new Refuse(refusal ?? "refused"), ct).ConfigureAwait(false);
                await stream.DisposeAsync().ConfigureAwait(false);
                return;
            }
            await channel.SendAsync(new DataAccept(), ct).ConfigureAwait(false);
            var sender = new ChildSender(cursor, stream);
            // A write to a hung child never returns: closing the link is what unblocks it.
            _ = cursor.Evicted.ContinueWith(_ => stream.Dispose(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            lock (_gate) _senders.Add(RunSenderAsync(sender, cursor, hello.NodeId, stream, ct));
        }
        catch (Exception e) when (e is KaDeployException or IOException or SocketException or OperationCanceledException)
        {
            if (e is not OperationCanceledException || !ct.IsCancellationRequested)
                _log($"rejected data link from {remote}: {e.Message}");
            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async Task RunSenderAsync(ChildSender sender, RingCursor cursor, int childId, NetworkStream stream, CancellationToken ct)
    {
        try
        {
            await sender.RunAsync(ct).ConfigureAwait(false);
            // Half-close and wait for the child to close its side: the End frame is then surely delivered
            // before this node (or server) goes away.
            stream.Socket.Shutdown(SocketShutdown.Send);
            var drain = new byte[64];
            using var wait = CancellationTokenSource.CreateLinkedTokenSource(ct);
            wait.CancelAfter(TimeSpan.FromMinutes(10));
            while (await stream.ReadAsync(drain, wait.Token).ConfigureAwait(false) > 0) { }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or KaDeployException or OperationCanceledException)
        {
            if (!ct.IsCancellationRequested) _childLost(childId, cursor.EvictedReason ?? e.Message);
        }
        finally
        {
            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }
}
