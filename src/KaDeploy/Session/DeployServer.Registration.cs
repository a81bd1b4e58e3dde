using System.Net;
using System.Net.Sockets;
using KaDeploy.Protocol;
using KaDeploy.Reporting;

namespace KaDeploy.Session;

public sealed partial class DeployServer
{
    private static readonly TimeSpan HelloTimeout = TimeSpan.FromSeconds(10);

    private async Task AcceptControlAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _controlListener.AcceptAsync(ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException) { return; }
            catch (ObjectDisposedException) { return; }
            catch (SocketException e) when (ct.IsCancellationRequested || e.SocketErrorCode == SocketError.OperationAborted) { return; }
            catch (SocketException e)
            {
                Log($"accept failed: {e.Message}");
                continue;
            }
            _ = HandleControlAsync(socket, ct);
        }
    }

    // Whatever a peer sends, this method ends with the peer registered or the socket closed and one line logged.
    private async Task HandleControlAsync(Socket socket, CancellationToken ct)
    {
        var remote = (IPEndPoint)socket.RemoteEndPoint!;
        var channel = new ControlChannel(new NetworkStream(socket, ownsSocket: false));
        ServerNode? node = null;
        try
        {
            Links.Configure(socket, _options.DeadPeerTimeout);
            var first = await Links.WithTimeout(t => channel.ReceiveAsync(t), HelloTimeout, "a hello", ct).ConfigureAwait(false);
            if (first is not Hello hello)
                throw new ProtocolException(first is null ? "closed without a hello" : $"sent {first.Type} before hello");
            node = await RegisterAsync(hello, remote, socket, channel, ct).ConfigureAwait(false);
            if (node is null) return;
            await ReadNodeAsync(node, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
        catch (Exception e) when (e is KaDeployException or IOException or SocketException or ObjectDisposedException)
        {
            if (node is null) Log($"rejected control connection from {remote}: {e.Message}");
            else NodeLost(node, e.Message);
        }
        finally
        {
            if (node is null)
            {
                await channel.DisposeAsync().ConfigureAwait(false);
                socket.Dispose();
            }
        }
    }

    private async Task<ServerNode?> RegisterAsync(Hello hello, IPEndPoint remote, Socket socket, ControlChannel channel, CancellationToken ct)
    {
        async Task<ServerNode?> Refuse(string reason)
        {
            Log($"refused {remote}: {reason}");
            await channel.SendAsync(new Refuse(reason), ct).ConfigureAwait(false);
            return null;
        }

        if (hello.Version != ProtocolConstants.Version)
            return await Refuse($"protocol version {hello.Version}, this server speaks {ProtocolConstants.Version}").ConfigureAwait(false);
        if (hello.Session != _options.Session)
            return await Refuse($"session '{hello.Session}' is not this server's session '{_options.Session}'").ConfigureAwait(false);

        if (hello.Role == HelloRole.Go)
        {
            int count;
            lock (_gate) count = _started ? -1 : _nodes.Count;
            if (count == 0) return await Refuse("no client has registered yet").ConfigureAwait(false);
            if (count > 0) _start.TrySetResult($"go from {remote.Address}");
            await channel.SendAsync(new Welcome(0, Math.Max(count, 0), _options.Clients), ct).ConfigureAwait(false);
            return null;
        }

        IPAddress dataAddress = remote.Address.IsIPv4MappedToIPv6 ? remote.Address.MapToIPv4() : remote.Address;
        if (hello.DataAddress.Length > 0 && IPAddress.TryParse(hello.DataAddress, out var said)
            && !said.Equals(IPAddress.Any) && !said.Equals(IPAddress.IPv6Any))
            dataAddress = said;
        if (hello.DataPort is < 1 or > 65535)
            return await Refuse($"bad data port {hello.DataPort}").ConfigureAwait(false);

        ServerNode node;
        int registered;
        lock (_gate)
        {
            if (_started) { node = null!; registered = -1; }
            else if (_nodes.Count >= _options.Clients) { node = null!; registered = -2; }
            else
            {
                string name = hello.NodeName.Length > 0 ? hello.NodeName : dataAddress.ToString();
                node = new ServerNode(_nextId++, name, dataAddress, hello.DataPort, socket, channel);
                _nodes.Add(node);
                registered = _nodes.Count;
            }
        }
        if (registered == -1) return await Refuse("the session has already started").ConfigureAwait(false);
        if (registered == -2) return await Refuse($"the session is full ({_options.Clients} clients)").ConfigureAwait(false);
        await channel.SendAsync(new Welcome(node.Id, registered, _options.Clients), ct).ConfigureAwait(false);
        Log($"registered {node.Report.Name} ({dataAddress}:{hello.DataPort}) as node {node.Id}: {registered}/{_options.Clients}");
        if (registered >= _options.Clients) _start.TrySetResult($"all {registered} client(s) registered");
        return node;
    }

    private async Task ReadNodeAsync(ServerNode node, CancellationToken ct)
    {
        while (true)
        {
            var m = await node.Channel.ReceiveAsync(ct).ConfigureAwait(false);
            switch (m)
            {
                case null:
                    NodeLost(node, "control link closed");
                    return;
                case LinkUp:
                    node.MarkLinked();
                    break;
                case Progress p:
                    Volatile.Write(ref node.ProgressBytes, p.PayloadBytes);
                    lock (node.Report) if (node.Report.State == NodeState.Linked) node.Report.State = NodeState.Receiving;
                    break;
                case Done d:
                    node.MarkDone(d);
                    Log($"{Describe(node.Id)}: {(d.Verified ? "verified" : "FAILED")} {d.PayloadBytes} bytes in {d.ElapsedMilliseconds / 1000.0:0.00} s{(d.Message.Length > 0 ? ": " + d.Message : "")}");
                    break;
                case ChildLost c:
                    Log($"{Describe(node.Id)} lost its child {Describe(c.ChildId)}: {c.Reason}");
                    FailNode(c.ChildId, $"link from its parent {Describe(node.Id)} lost: {c.Reason}");
                    break;
                default:
                    throw new ProtocolException($"unexpected {m.Type} from a client");
            }
        }
    }

    // A node whose upstream link is gone cannot finish (no repair yet); do not wait for its verdict.
    private void FailNode(int id, string reason)
    {
        ServerNode? child;
        lock (_gate) child = _nodes.Find(n => n.Id == id);
        child?.Fail(reason);
    }

    private void NodeLost(ServerNode node, string reason)
    {
        bool removed = false;
        lock (_gate)
        {
            if (!_started) removed = _nodes.Remove(node);
        }
        if (removed)
        {
            Log($"node {node.Id} {node.Report.Name} left before the start ({reason})");
            _ = node.DisposeAsync().AsTask();
            return;
        }
        if (!node.IsFinished)
        {
            Log($"{Describe(node.Id)} lost: {reason}");
            node.Fail($"lost: {reason}");
        }
    }
}
