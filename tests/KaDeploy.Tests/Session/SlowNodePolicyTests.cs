using KaDeploy.Session;

namespace KaDeploy.Tests.Session;

/// <summary>
/// The slow-node decision at its edges, without a session: who is moved, and when a move would gain nothing (one node,
/// nobody else still receiving, no spool to feed it from, enough nodes moved already).
/// </summary>
public class SlowNodePolicyTests
{
    private const long Now = 100_000;
    private static readonly TimeSpan After = TimeSpan.FromSeconds(2);
    private const double Tree = 100e6;

    /// <summary>Held for 5 s while its sink took 10 MB/s: a tenth of the tree's rate.</summary>
    private static readonly SlowNodeView Slow = new(false, false, false, false, HeldSince: Now - 5000, TakenWhileHeld: 50_000_000);
    private static readonly SlowNodeView Flowing = new(false, false, false, false, 0, 0);

    private static int Pick(params SlowNodeView[] nodes) => PickOf(nodes, Tree, Now, After, noSpool: false, out _);

    // The move Decide picks, and its reason when it moves one (what the server logs).
    private static int PickOf(SlowNodeView[] nodes, double tree, long now, TimeSpan after, bool noSpool, out string why)
    {
        var d = SlowNodePolicy.Decide(nodes, tree, now, after, noSpool);
        why = d.Move >= 0 ? d.Why : "";
        return d.Move;
    }

    [Fact]
    public void A_slow_node_among_receiving_ones_is_moved_and_the_log_says_why()
    {
        int i = PickOf([Flowing, Slow, Flowing], Tree, Now, After, noSpool: false, out string why);
        Assert.Equal(1, i);
        Assert.Equal("its own sink held its buffer full for 5.0 s, taking 10.0 MB/s where the tree moves 100.0 MB/s", why);
    }

    [Fact]
    public void A_lone_node_is_never_moved()
    {
        // Nobody behind it to free; it would be fed from the spool at the same speed after a pointless re-link.
        Assert.Equal(-1, Pick(Slow));
    }

    [Fact]
    public void The_last_node_still_receiving_is_not_moved_when_the_others_are_done()
    {
        var finished = Flowing with { Finished = true };
        var complete = Flowing with { Complete = true };
        var gone = Flowing with { Detached = true };
        Assert.Equal(-1, Pick(finished, Slow, complete, gone));
        // One other node still receiving is enough for the move to pay.
        Assert.Equal(1, Pick(finished, Slow, Flowing));
    }

    [Fact]
    public void Without_a_spool_nobody_is_moved()
    {
        Assert.Equal(-1, PickOf([Flowing, Slow, Flowing], Tree, Now, After, noSpool: true, out _));
    }

    [Fact]
    public void A_zero_delay_turns_the_moves_off()
    {
        Assert.Equal(-1, PickOf([Flowing, Slow, Flowing], Tree, Now, TimeSpan.Zero, noSpool: false, out _));
    }

    [Fact]
    public void A_hold_shorter_than_the_delay_or_at_half_the_tree_rate_is_not_slow()
    {
        var brief = Slow with { HeldSince = Now - 1999 };
        var halfRate = Slow with { TakenWhileHeld = 250_000_000 }; // 50 MB/s for 5 s: exactly half the tree's rate
        var justUnderHalf = Slow with { TakenWhileHeld = 249_999_999 };
        Assert.Equal(-1, Pick(Flowing, brief));
        Assert.Equal(-1, Pick(Flowing, halfRate));
        Assert.Equal(1, Pick(Flowing, justUnderHalf));
        Assert.Equal(1, Pick(Flowing, Slow with { HeldSince = Now - 2000 }));
    }

    [Fact]
    public void A_node_that_takes_nothing_is_hung_not_slow()
    {
        Assert.Equal(-1, Pick(Flowing, Slow with { TakenWhileHeld = 0 }));
    }

    [Fact]
    public void Before_the_tree_rate_is_known_nobody_is_moved()
    {
        Assert.Equal(-1, PickOf([Flowing, Slow], 0, Now, After, noSpool: false, out _));
    }

    [Fact]
    public void At_most_a_quarter_of_the_nodes_are_moved()
    {
        var moved = Flowing with { Moved = true };
        // 8 nodes: 2 may be moved; with 2 moved already, a third slow one stays.
        Assert.Equal(7, Pick(moved, Flowing, Flowing, Flowing, Flowing, Flowing, Flowing, Slow));
        Assert.Equal(-1, Pick(moved, moved, Flowing, Flowing, Flowing, Flowing, Flowing, Slow));
        // Fewer than 8: one move at most.
        Assert.Equal(-1, Pick(moved, Flowing, Flowing, Slow));
    }

    [Fact]
    public void Nodes_already_moved_finished_or_detached_are_not_candidates()
    {
        Assert.Equal(-1, Pick(Flowing, Flowing, Flowing, Flowing, Slow with { Detached = true }));
        Assert.Equal(-1, Pick(Flowing, Flowing, Slow with { Finished = true }));
        Assert.Equal(2, Pick(Flowing, Flowing, Slow, Slow));
    }

    [Fact]
    public void A_node_whose_offset_the_spool_will_have_let_go_is_not_moved()
    {
        // Fed last, from a memory spool that keeps only the stream's end, it would fail with "no longer held".
        Assert.Equal(-1, Pick(Flowing, Slow with { SpoolKeepsIt = false }, Flowing));
        Assert.Equal(2, Pick(Flowing, Slow with { SpoolKeepsIt = false }, Slow));
    }

    [Theory]
    [InlineData(-1, 10L << 30, 0, true)]                   // a file spool keeps everything
    [InlineData(1L << 30, -1, 0, true)]                    // unknown length: no promise either way, moved as before
    [InlineData(1L << 30, 512L << 20, 0, true)]            // the whole stream fits the memory spool
    [InlineData(512L << 20, 1L << 30, 100L << 20, false)]  // 1 GiB through a 512 MiB spool, node at 100 MiB: let go
    [InlineData(512L << 20, 1L << 30, 600L << 20, true)]   // node at 600 MiB: 424 MiB + 1 % + 1 MiB still kept
    public void The_spool_keeps_an_offset_only_within_its_last_bytes(long keeps, long total, long offset, bool kept)
    {
        Assert.Equal(kept, SlowNodePolicy.SpoolKeeps(keeps, total, offset));
    }
}
