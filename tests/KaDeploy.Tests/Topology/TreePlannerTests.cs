using System.Net;
using KaDeploy.Topology;

namespace KaDeploy.Tests.Topology;

public class TreePlannerTests
{
    private static NodeEndpoint[] Nodes(int n) =>
        Enumerable.Range(1, n).Select(i => new NodeEndpoint(i, $"n{i}", IPAddress.Parse($"10.0.{i / 256}.{i % 256}"), 1000 + i)).ToArray();

    [Fact]
    public void ArityOneIsAChainInOrder()
    {
        var plan = TreePlanner.Plan(Nodes(5), 1);
        Assert.Equal([0, 1, 2, 3, 4], plan.Select(p => p.ParentId));
        Assert.Equal([1, 2, 3, 4, 5], plan.Select(p => p.Depth));
        Assert.Empty(plan[^1].ChildIds);
        Assert.Equal([2], plan[0].ChildIds);
    }

    [Theory]
    [InlineData(1, 3)] [InlineData(3, 3)] [InlineData(13, 3)] [InlineData(40, 3)] [InlineData(300, 2)] [InlineData(300, 4)] [InlineData(7, 8)]
    public void BalancedTreeOfAnyArity(int n, int arity)
    {
        var nodes = Nodes(n);
        var plan = TreePlanner.Plan(nodes, arity);
        var byId = plan.ToDictionary(p => p.Node.NodeId);
        Assert.Equal(n, plan.Count);
        // every node but the root's children has a parent among the nodes, and parent/child lists agree
        foreach (var p in plan)
        {
            Assert.True(p.ChildIds.Count <= arity);
            foreach (int c in p.ChildIds) Assert.Equal(p.Node.NodeId, byId[c].ParentId);
            if (p.ParentId != 0) Assert.Contains(p.Node.NodeId, byId[p.ParentId].ChildIds);
        }
        Assert.Equal(Math.Min(n, arity), plan.Count(p => p.ParentId == 0));
        // balanced: depth is ceil(log_arity) of the position, never more than one level apart among leaves
        int maxDepth = plan.Max(p => p.Depth);
        var leaves = plan.Where(p => p.ChildIds.Count == 0).Select(p => p.Depth).ToArray();
        Assert.True(maxDepth - leaves.Min() <= 1, $"leaves at depths {leaves.Min()}..{maxDepth}");
        if (arity > 1) Assert.True(maxDepth <= Math.Ceiling(Math.Log(n * (arity - 1) + 1, arity)) + 1);
    }

    [Fact]
    public void OrdersByAddressBytesNotText()
    {
        var nodes = new[]
        {
            new NodeEndpoint(1, "a", IPAddress.Parse("10.0.0.10"), 1),
            new NodeEndpoint(2, "b", IPAddress.Parse("10.0.0.9"), 1),
            new NodeEndpoint(3, "c", IPAddress.Parse("10.0.0.100"), 1),
            new NodeEndpoint(4, "d", IPAddress.Parse("9.255.0.1"), 1),
        };
        Assert.Equal([4, 2, 1, 3], TreePlanner.OrderByAddress(nodes).Select(n => n.NodeId));
    }

    [Fact]
    public void NodesFileOrderWinsAndUnknownNodesFollow()
    {
        var nodes = Nodes(4);
        var order = TreePlanner.OrderByList(nodes, ["n3", "10.0.0.1"]);
        Assert.Equal([3, 1, 2, 4], order.Select(n => n.NodeId));
    }
}
