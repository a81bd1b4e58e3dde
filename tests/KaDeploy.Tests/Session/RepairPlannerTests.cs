using KaDeploy.Protocol;
using KaDeploy.Session;

namespace KaDeploy.Tests.Session;

/// <summary>
/// Where orphans re-attach, and when a slow node may be moved, decided from the server's view alone: an orphan goes only
/// to a parent that still holds its offset (nearest first, the server last), and a slow node stays when a child's offset
/// would be held nowhere, or when every node is slow (CPU starvation). The offsets are those of the keyed bench's failure.
/// </summary>
public class RepairPlannerTests
{
    // The bench (AES-256-GCM, chain of 8 on 2 cores): "node 4 could not resume at offset 401965200 from node 5: ...
    // no longer held here (buffer from 411389856 at best)" after node 4's parent was moved for being slow.
    private const long OrphanOffset = 401_965_200;
    private const long GrandparentHeldFrom = 411_389_856;
    private const double TreeRate = 60e6;

    private static readonly OrphanView Node4 = new(4, OrphanOffset, RetainedFrom: 380_000_000, Children: 1);
    private static readonly HolderView Node5 = new(5, GrandparentHeldFrom, RepairPlanner.NodeSlack);
    // 1 GiB through the server's default memory spool: at 450 MB it has let nothing go yet.
    private static readonly HolderView ServerFromStart = new(0, 0, RepairPlanner.ServerSlack(TreeRate));

    [Fact]
    public void The_bench_orphan_goes_to_the_server_not_to_the_grandparent_that_let_its_offset_go()
    {
        Assert.False(Node5.Holds(OrphanOffset));
        Assert.Equal([0], RepairPlanner.Place([Node4], [Node5, ServerFromStart], arity: 1));
    }

    [Fact]
    public void The_nearest_ancestor_that_holds_the_offset_is_chosen()
    {
        var node5Holding = Node5 with { RetainedFrom = OrphanOffset - (2L << 20) };
        var node6Holding = new HolderView(6, OrphanOffset - (8L << 20), RepairPlanner.NodeSlack);
        Assert.Equal([5], RepairPlanner.Place([Node4], [node5Holding, node6Holding, ServerFromStart], 1));
        // The grandparent let it go, the next ancestor up did not: that one, not the server.
        Assert.Equal([6], RepairPlanner.Place([Node4], [Node5, node6Holding, ServerFromStart], 1));
    }

    [Fact]
    public void An_offset_within_the_slack_of_what_a_ring_still_holds_counts_as_let_go()
    {
        // Its heartbeat is half a second old and its ring moves on: just at the edge is where a refusal comes from.
        var edge = Node5 with { RetainedFrom = OrphanOffset - RepairPlanner.NodeSlack + 1 };
        Assert.False(edge.Holds(OrphanOffset));
        Assert.True((edge with { RetainedFrom = OrphanOffset - RepairPlanner.NodeSlack }).Holds(OrphanOffset));
        // A ring that let nothing go yet holds all it has; an unknown one (a node that does not say) is assumed to.
        Assert.True((Node5 with { RetainedFrom = 0 }).Holds(OrphanOffset));
        Assert.True((Node5 with { RetainedFrom = -1 }).Holds(OrphanOffset));
    }

    [Fact]
    public void With_no_holder_the_orphan_has_no_parent()
    {
        // The server's memory spool has wrapped too: from 405 MB, plus two seconds of the tree's speed.
        var serverWrapped = ServerFromStart with { RetainedFrom = 405_000_000 };
        Assert.Equal([-1], RepairPlanner.Place([Node4], [Node5, serverWrapped], 1));
        Assert.Equal(2 * (long)TreeRate + RepairPlanner.NodeSlack, RepairPlanner.ServerSlack(TreeRate));
    }

    [Fact]
    public void Siblings_go_under_the_promoted_orphan_only_while_it_has_room_and_holds_their_offsets()
    {
        // Arity 3: the most advanced orphan (a, no children) goes up; b and c under it; d would exceed its room.
        var a = new OrphanView(10, 300_000_000, RetainedFrom: 290_000_000, Children: 0);
        var b = new OrphanView(11, 299_000_000, 280_000_000, 0);
        var c = new OrphanView(12, 298_000_000, 280_000_000, 0);
        var d = new OrphanView(13, 297_000_000, 280_000_000, 0);
        var parent = new HolderView(5, 250_000_000, RepairPlanner.NodeSlack);
        Assert.Equal([5, 10, 10, 10], RepairPlanner.Place([a, b, c, d], [parent, ServerFromStart], 3));
        Assert.Equal([5, 10, 10, 5], RepairPlanner.Place([a with { Children = 1 }, b, c, d], [parent, ServerFromStart], 3));
        // A sibling older than what the promoted orphan's ring holds goes to the nearest holder of its offset instead.
        var old = new OrphanView(14, 289_500_000, 280_000_000, 0);
        Assert.Equal([5, 5], RepairPlanner.Place([a, old], [parent, ServerFromStart], 3));
        // A promoted orphan that found no holder takes nobody under it.
        var nobody = new HolderView(5, 310_000_000, RepairPlanner.NodeSlack);
        var server = ServerFromStart with { RetainedFrom = 305_000_000 };
        Assert.Equal([-1, -1], RepairPlanner.Place([a, b], [nobody, server], 3));
    }

    // --- the slow-node decision with the planner's answer and the starvation rule

    private const long Now = 100_000;
    private static readonly TimeSpan After = TimeSpan.FromSeconds(1);
    private static readonly SlowNodeView Slow = new(false, false, false, false, HeldSince: Now - 5000, TakenWhileHeld: 50_000_000, SinkHeldAt: Now - 400);
    private static readonly SlowNodeView Flowing = new(false, false, false, false, 0, 0);

    [Fact]
    public void A_slow_node_whose_child_no_holder_would_serve_stays_and_the_log_says_why()
    {
        var d = SlowNodePolicy.Decide([Flowing, Slow with { OrphansHeld = false }, Flowing], 100e6, Now, After, noSpool: false);
        Assert.Equal(-1, d.Move);
        Assert.Equal(1, d.Declined);
        Assert.EndsWith("not moved: the offset of a child of it is no longer held by the server, where a refused orphan goes", d.Why);
        Assert.Equal(1, SlowNodePolicy.Decide([Flowing, Slow, Flowing], 100e6, Now, After, noSpool: false).Move);
    }

    [Fact]
    public void When_more_than_a_quarter_of_the_nodes_are_held_by_their_own_sinks_nobody_is_moved()
    {
        // Eight nodes starved on two cores: each one's sink holds its ring in turn (within the last few seconds).
        var heldLately = Flowing with { SinkHeldAt = Now - 3000 };
        SlowNodeView[] two = [Slow, heldLately, Flowing, Flowing, Flowing, Flowing, Flowing, Flowing];
        SlowNodeView[] three = [Slow, heldLately, heldLately, Flowing, Flowing, Flowing, Flowing, Flowing];
        Assert.Equal(0, SlowNodePolicy.Decide(two, 100e6, Now, After, false).Move);
        var d = SlowNodePolicy.Decide(three, 100e6, Now, After, false);
        Assert.Equal(-1, d.Move);
        Assert.Contains("3 nodes' own sinks held their buffers", d.Why);
        // Held long ago does not count, nor does a node no longer receiving.
        var longAgo = Flowing with { SinkHeldAt = Now - 7000 };
        Assert.Equal(0, SlowNodePolicy.Decide([Slow, heldLately, longAgo, longAgo with { Finished = true }, heldLately with { Complete = true }, Flowing, Flowing, Flowing], 100e6, Now, After, false).Move);
        // Fewer than eight nodes: the slow one must be the only one.
        Assert.Equal(-1, SlowNodePolicy.Decide([Slow, heldLately, Flowing], 100e6, Now, After, false).Move);
        Assert.Equal(0, SlowNodePolicy.Decide([Slow, Flowing, Flowing], 100e6, Now, After, false).Move);
    }
}

/// <summary>The heartbeat's optional retained-from offset: on the wire only when said, checked against the offset.</summary>
public class HeartbeatRetainedFromTests
{
    private static byte[] Body(ControlMessage m)
    {
        var w = new System.Buffers.ArrayBufferWriter<byte>();
        ControlCodec.Encode(m, w);
        return w.WrittenSpan[4..].ToArray();
    }

    [Fact]
    public void A_node_heartbeat_carries_what_its_ring_holds_and_the_servers_leaves_it_out()
    {
        var node = new Heartbeat(5_000_000, FlowState.HeldBySink, 1_000_000);
        Assert.Equal(node, ControlCodec.Decode(Body(node)));
        var server = new Heartbeat(0, FlowState.Flowing);
        Assert.Equal(Body(node).Length - 8, Body(server).Length);
        Assert.Equal(-1, ((Heartbeat)ControlCodec.Decode(Body(server))).RetainedFrom);
        // Holding from past its own offset is nonsense: refused.
        Assert.Throws<ProtocolException>(() => ControlCodec.Decode(Body(node with { RetainedFrom = 5_000_001 })));
    }
}
