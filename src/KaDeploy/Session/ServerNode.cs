using System.Net;
using System.Net.Sockets;
using KaDeploy.Protocol;
using KaDeploy.Reporting;

namespace KaDeploy.Session;

/// <summary>The server's view of one registered client: its control link, report row and milestones.</summary>
internal sealed class ServerNode : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly TaskCompletionSource _linked = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public ServerNode(int id, string name, IPAddress address, int dataPort, Socket socket, ControlChannel channel)
    {
        _socket = socket;
        Channel = channel;
        Address = address;
        DataPort = dataPort;
        Report = new NodeReport { Id = id, Name = name, Address = address.ToString(), State = NodeState.Registered };
    }

    public int Id => Report.Id;
    public IPAddress Address { get; }
    public int DataPort { get; }
    public ControlChannel Channel { get; }
    public NodeReport Report { get; }
    public long ProgressBytes;

    /// <summary>Completes when the node's upstream link is up (or it failed).</summary>
    public Task Linked => _linked.Task;

    /// <summary>Completes when the node has given its verdict, or is known to be lost.</summary>
    public Task Finished => _finished.Task;

    public bool IsFinished => _finished.Task.IsCompleted;

    public void MarkLinked()
    {
        lock (Report) if (Report.State == NodeState.Planned) Report.State = NodeState.Linked;
        _linked.TrySetResult();
    }

    public void MarkDone(Done done)
    {
        lock (Report)
        {
            if (IsFinished) return;
            Report.Verified = done.Verified;
            Report.State = done.Verified ? NodeState.Verified : NodeState.Failed;
            Report.WireBytes = done.WireBytes;
            Report.PayloadBytes = done.PayloadBytes;
            Report.Seconds = done.ElapsedMilliseconds / 1000.0;
            Report.Message = done.Message;
        }
        _linked.TrySetResult();
        _finished.TrySetResult();
    }

    /// <summary>Records the first reason this node failed; later reasons are ignored.</summary>
    public void Fail(string reason)
    {
        lock (Report)
        {
            if (IsFinished) return;
            Report.State = NodeState.Failed;
            Report.Verified = false;
            if (Report.Message.Length == 0) Report.Message = reason;
        }
        _linked.TrySetResult();
        _finished.TrySetResult();
    }

    /// <summary>Sends, ignoring a link that is already gone (its loss is reported by the reader loop).</summary>
    public async Task TrySendAsync(ControlMessage message, CancellationToken ct)
    {
        try { await Channel.SendAsync(message, ct).ConfigureAwait(false); }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException) { }
    }

    public async ValueTask DisposeAsync()
    {
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
        await Channel.DisposeAsync().ConfigureAwait(false);
        _socket.Dispose();
    }
}
