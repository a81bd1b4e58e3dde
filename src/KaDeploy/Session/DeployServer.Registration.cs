using System.Net;
using KaDeploy.Protocol;
using KaDeploy.Reporting;
using KaDeploy.Security;
using KaDeploy.Transport;

namespace KaDeploy.Session;

public sealed partial class DeployServer
{
    private static readonly TimeSpan HelloTimeout = TimeSpan.FromSeconds(10);

    private async Task AcceptControlAsync(CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            Connection connection;
            try
            {
                connection = await _controlListener.AcceptAsync(ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException) { return; }
            catch (ObjectDisposedException) { return; }
            catch (Exception e) when (ConnectionErrors.IsLinkFailure(e))
            {
                Log($"accept failed: {ConnectionErrors.Describe(e)}");
                continue;
            }
            _ = HandleControlAsync(connection, ct);
        }
    }

    // Whatever a peer sends, this method ends with the peer registered or the connection aborted and one line logged.
    private async Task HandleControlAsync(Connection connection, CancellationToken ct)
    {
        var remote = connection.RemoteEndPoint;
        ServerNode? node = null;
        try
        {
            (connection, _) = await _handshake.AcceptAsync(connection, ChannelKind.Control, _options.Session, ct).ConfigureAwait(false);
            var channel = connection.OpenControlChannel();
            var first = await Links.WithTimeout(t => channel.ReceiveAsync(t), HelloTimeout, "a hello", ct).ConfigureAwait(false);
            if (first is not Hello hello)
                throw new ProtocolException(first is null ? "closed without a hello" : $"sent {first.Type} before hello");
            node = await RegisterAsync(hello, remote, connection, channel, ct).ConfigureAwait(false);
            if (node is null) return;
            await ReadNodeAsync(node, ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested) { }
        catch (Exception e) when (e is KaDeployException || ConnectionErrors.IsLinkFailure(e))
        {
            if (node is null) Log($"rejected control connection from {remote}: {ConnectionErrors.Describe(e)}");
            else NodeLost(node, "control link lost: " + ConnectionErrors.Describe(e));
        }
        finally
        {
            if (node is null) connection.Abort("not registered");
        }
    }

    private async Task<ServerNode?> RegisterAsync(Hello hello, IPEndPoint remote, Connection connection, ControlChannel channel, CancellationToken ct)
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

        IPAddress dataAddress = remote.Address;
        if (hello.DataAddress.Length > 0 && IPAddress.TryParse(hello.DataAddress, out var said)
            && !said.Equals(IPAddress.Any) && !said.Equals(IPAddress.IPv6Any))
            dataAddress = said;
        if (hello.DataPort is < 1 or > 65535)
            return await Refuse($"bad data port {hello.DataPort}").ConfigureAwait(false);

        ServerNode node;
        int registered;
        ServerNode? failedBefore = null;
        lock (_gate)
        {
            string name = hello.NodeName.Length > 0 ? hello.NodeName : dataAddress.ToString();
            if (_started)
            {
                // A node declared failed that comes back (resumed from SIGSTOP, link back up, restarted) does
                // not rejoin: its place and its children were given away, and its report says why it failed.
                failedBefore = _nodes.FindFirst(n => n.Gone && (n.Report.Name == name || n.Address.Equals(dataAddress)));
                node = null!; registered = -1;
            }
            else if (_nodes.Count >= _options.Clients) { node = null!; registered = -2; }
            else
            {
                node = new ServerNode(_nextId++, name, dataAddress, hello.DataPort, connection, channel);
                _nodes.Add(node);
                registered = _nodes.Count;
            }
        }
        if (failedBefore is not null)
            return await Refuse($"node {failedBefore.Id} ({failedBefore.Report.Name}) was declared failed ({failedBefore.Report.Message}) and does not rejoin this session").ConfigureAwait(false);
        if (registered == -1) return await Refuse("the session has already started").ConfigureAwait(false);
        if (registered == -2) return await Refuse($"the session is full ({_options.Clients} clients)").ConfigureAwait(false);
        try { await channel.SendAsync(new Welcome(node.Id, registered, _options.Clients), ct).ConfigureAwait(false); }
        finally { node.MarkWelcomed(); }
        Log($"registered {node.Report.Name} ({dataAddress}:{hello.DataPort}) as node {node.Id}: {registered}/{_options.Clients}");
        if (registered >= _options.Clients) _start.TrySetResult($"all {registered} client(s) registered");
        return node;
    }

    private async Task ReadNodeAsync(ServerNode node, CancellationToken ct)
    {
        while (true)
        {
            var m = await node.Channel.ReceiveAsync(ct).ConfigureAwait(false);
            if (node.Gone) return; // declared failed: whatever it still says is void
            node.Touch();
            switch (m)
            {
                case null:
                    NodeLost(node, "control link lost: closed by the node");
                    return;
                case Heartbeat h:
                    HeartbeatFrom(node, h);
                    break;
                case LinkUp:
                    node.MarkLinked();
                    Relinked(node);
                    break;
                case Progress p:
                    Volatile.Write(ref node.ProgressBytes, p.PayloadBytes);
                    lock (node.Report) if (node.Report.State == NodeState.Linked) node.Report.State = NodeState.Receiving;
                    break;
                case Done d:
                    node.MarkDone(d);
                    Log($"{Describe(node.Id)}: {(d.Verified ? "verified" : "FAILED")} {d.PayloadBytes} bytes in {d.ElapsedMilliseconds / 1000.0:0.00} s{(d.Message.Length > 0 ? ": " + d.Message : "")}");
                    if (!d.Verified) LeaveTree(node, $"its own copy failed ({d.Message})");
                    break;
                case ChildLost c:
                    ChildLinkLost(node, c.ChildId, c.Reason);
                    break;
                case ResumeFailed r:
                    ResumeFailedAt(node, r);
                    break;
                default:
                    throw new ProtocolException($"unexpected {m.Type} from a client");
            }
        }
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
        DeclareGone(node, reason);
    }
}
