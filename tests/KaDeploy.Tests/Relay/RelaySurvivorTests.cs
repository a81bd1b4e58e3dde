using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Security;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// Written against the mutants the Relay/ Stryker run of the fifth session left alive (tests/README.md, Mutation
/// testing): the guards a caller's mistake meets, and the ring's less travelled paths. Each test checks values it
/// computes itself and failed once with its mutant planted by hand.
/// </summary>
public class RelaySurvivorTests
{
    private static readonly byte[] StreamKey = RandomNumberGenerator.GetBytes(StreamCipher.KeySize);

    // ---- guards: a wrong argument is refused at once, not turned into a broken ring later ----

    [Fact]
    public void ARingNeedsACapacityAndANonNegativeRetention()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new RelayRing(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RelayRing(-5));
        Assert.Throws<ArgumentOutOfRangeException>(() => new RelayRing(RelayRing.SlotSize, -1));
        using var smallest = new RelayRing(1, 0); // the smallest legal ring: four slots
        Assert.Equal(4, smallest.SlotCount);
    }

    [Fact]
    public async Task ARunOfNoSlotsIsRefused()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => ring.AcquireRunAsync(0, default).AsTask());
        Assert.Equal(RelayRing.SlotSize, (await ring.AcquireRunAsync(1, default)).Length);
    }

    [Fact]
    public void PublishingASlotThatWasNeverAcquiredIsRefused()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var header = new DataFrameHeader(DataFrameType.Data, 10, 0, 0);
        Assert.Throws<InvalidOperationException>(() => ring.Publish(header, DataFrameHeader.Size + 10));
        Assert.Equal(0, ring.Published);
        Assert.True(ring.AcquireAsync(default).IsCompletedSuccessfully);
        ring.Publish(header, DataFrameHeader.Size + 10);
        // One acquired, one published: a second publish has no slot.
        Assert.Throws<InvalidOperationException>(() => ring.Publish([header with { Offset = 10 }]));
        Assert.Equal(1, ring.Published);
        Assert.Equal(10, ring.NextOffset);
    }

    [Fact]
    public void TheRelayPartsRefuseAMissingStreamOrRing()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        using var cursor = ring.Attach("c");
        Assert.Throws<ArgumentNullException>(() => new FrameReceiver(null!, ring));
        Assert.Throws<ArgumentNullException>(() => new FrameReceiver(new MemoryStream(), null!));
        Assert.Throws<ArgumentNullException>(() => new ChildSender(null!, new MemoryStream()));
        Assert.Throws<ArgumentNullException>(() => new ChildSender(cursor, null!));
        Assert.Throws<ArgumentNullException>(() => new RingReaderStream(null!));
        Assert.Throws<ArgumentNullException>(() => new RingWriterStream(null!, default));
    }

    [Fact]
    public void ASealingWriterOrAnOpeningReceiverNeedsASealedRing()
    {
        using var cipher = new StreamCipher(StreamKey, 7);
        using var clear = new RelayRing(4 * RelayRing.SlotSize);
        Assert.Equal("ring", Assert.Throws<ArgumentException>(() => new FrameReceiver(new MemoryStream(), clear, cipher: cipher)).ParamName);
        Assert.Equal("ring", Assert.Throws<ArgumentException>(() => new RingWriterStream(clear, default, cipher)).ParamName);
        using var sealedRing = new RelayRing(4 * (RelayRing.SlotSize + RelayRing.PlaintextSize), sealedFrames: true);
        _ = new FrameReceiver(new MemoryStream(), sealedRing, cipher: cipher);
        _ = new RingWriterStream(sealedRing, default, cipher);
    }
}
