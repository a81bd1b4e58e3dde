using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// How long a consumer counts as stalled: from the later of its last frame and the moment data came for it. A consumer
/// that had read everything while another one held the producer back was idle, not stalled; it must not be given up
/// the moment the producer moves on. And a sub-second stall limit is said as such, not as "0 s".
/// </summary>
public class StallMeasureTests
{
    private static void PublishData(RelayRing ring, int frames, long start)
    {
        for (int i = 0; i < frames; i++)
        {
            Assert.True(ring.AcquireAsync(default).IsCompletedSuccessfully, $"frame {i}: the ring had no free slot");
            ring.Publish(new DataFrameHeader(DataFrameType.Data, 100, start + i * 100L, 0), DataFrameHeader.Size + 100);
        }
    }

    [Fact]
    public async Task AConsumerIdleBecauseAnotherHeldTheProducerIsNotStalledWhenTheProducerMovesOn()
    {
        var limit = TimeSpan.FromSeconds(3);
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var idle = ring.Attach("child 2");
        var holder = ring.Attach("child 7");
        PublishData(ring, 4, 0);
        for (int i = 0; i < 4; i++) { Assert.True(idle.NextAsync(default).IsCompletedSuccessfully); idle.Advance(); }
        // "child 2" has everything; "child 7" holds the producer back for longer than the limit.
        ValueTask<Memory<byte>> fifth = ring.AcquireAsync(default);
        Assert.False(fifth.IsCompleted);
        await Eventually.HoldsAsync(() => ring.FindStalled(limit) == holder, "child 7 stalled past the limit");
        // ... and "child 2" took its last frame longer ago than the limit too (by a margin of half a second).
        await Eventually.HoldsAsync(() => Environment.TickCount64 - idle.LastProgress > limit.TotalMilliseconds + 500, "child 2's last frame older than the limit");
        holder.Evict("given up");
        await fifth.AsTask().WaitAsync(Eventually.Deadline);
        ring.Publish(new DataFrameHeader(DataFrameType.Data, 100, 400, 0), DataFrameHeader.Size + 100);
        PublishData(ring, 3, 500);
        // The producer now waits on "child 2", a whole window behind: its data came just now, whatever its last frame.
        Assert.False(ring.AcquireAsync(default).IsCompleted);
        Assert.Same(idle, ring.Holder());
        Assert.Null(ring.FindStalled(limit));
        // Taking nothing from here on, it is stalled once the limit has passed since then.
        await Eventually.HoldsAsync(() => ring.FindStalled(limit) == idle, "child 2 stalled past the limit since its data came");
    }

    [Theory]
    [InlineData(500, "500 ms")]
    [InlineData(250.5, "250.5 ms")]
    [InlineData(1000, "1 s")]
    [InlineData(1500, "1.5 s")]
    [InlineData(60_000, "60 s")]
    public void AStallLimitIsSaidInTheUnitThatShowsIt(double milliseconds, string said)
    {
        Assert.Equal(said, StallWatch.Describe(TimeSpan.FromMilliseconds(milliseconds)));
    }

    [Fact]
    public async Task AHalfSecondStallIsReportedAsHalfASecond()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var hung = ring.Attach("child 3");
        using var stop = new CancellationTokenSource();
        var logged = new List<string>();
        var watch = StallWatch.RunAsync(ring, TimeSpan.FromMilliseconds(500), r => { lock (logged) logged.Add(r); }, stop.Token);
        PublishData(ring, 4, 0);
        Assert.False(ring.AcquireAsync(default).IsCompleted);
        string reason = await hung.Evicted.WaitAsync(Eventually.Deadline);
        stop.Cancel();
        await watch.WaitAsync(Eventually.Deadline);
        Assert.Equal("child 3 took nothing for 500 ms while the relay buffer was full; given up so the others go on", reason);
    }
}
