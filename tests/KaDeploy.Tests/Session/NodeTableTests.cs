using System.Net;
using KaDeploy.Protocol;
using KaDeploy.Session;
using KaDeploy.Transport;

namespace KaDeploy.Tests.Session;

/// <summary>
/// The server's node table: repairs and the slow-node check read a node's children from its index instead of scanning
/// every node, so the index must follow every change of parent, and forget a node that leaves.
/// </summary>
public sealed class NodeTableTests
{
    private static ServerNode Node(int id)
    {
        var ep = new IPEndPoint(IPAddress.Loopback, 40000 + id);
        var link = new MemoryLink(ep, ep, 1024);
        return new ServerNode(id, $"n{id}", IPAddress.Loopback, 0, link.OpenerSide, new ControlChannel(link.OpenerSide.Stream));
    }

    private static int[] Ids(IReadOnlyList<ServerNode> nodes) => [.. nodes.Select(n => n.Id).Order()];

    [Fact]
    public void ChildrenFollowEveryChangeOfParent()
    {
        var table = new NodeTable();
        var nodes = Enumerable.Range(1, 5).Select(Node).ToArray();
        foreach (var n in nodes) table.Add(n);
        Assert.Equal([1, 2, 3, 4, 5], Ids(table.ChildrenOf(0)));

        // The plan: a chain 1 <- 2 <- 3, and 4, 5 under 1.
        table.SetParent(nodes[1], 1);
        table.SetParent(nodes[2], 2);
        table.SetParent(nodes[3], 1);
        table.SetParent(nodes[4], 1);
        Assert.Equal([1], Ids(table.ChildrenOf(0)));
        Assert.Equal([2, 4, 5], Ids(table.ChildrenOf(1)));
        Assert.Equal([3], Ids(table.ChildrenOf(2)));
        Assert.Empty(table.ChildrenOf(3));

        // A repair: node 2 fails, its child goes under node 1; then node 5 is moved to the server.
        table.SetParent(nodes[2], 1);
        table.SetParent(nodes[4], 0);
        Assert.Empty(table.ChildrenOf(2));
        Assert.Equal([2, 3, 4], Ids(table.ChildrenOf(1)));
        Assert.Equal([1, 5], Ids(table.ChildrenOf(0)));
        Assert.All(nodes, n => Assert.Contains(n, table.ChildrenOf(n.ParentId)));
    }

    [Fact]
    public void ARemovedNodeIsNoLongerFoundNorListed()
    {
        var table = new NodeTable();
        var a = Node(1);
        var b = Node(2);
        table.Add(a);
        table.Add(b);
        table.SetParent(b, 1);
        Assert.True(table.Remove(b));
        Assert.False(table.Remove(b));
        Assert.Null(table.Find(2));
        Assert.Empty(table.ChildrenOf(1));
        Assert.Same(a, table.Find(1));
        Assert.Equal([a], table.ToArray());
        Assert.Equal(1, table.Count);
    }
}
