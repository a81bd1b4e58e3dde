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
    // One case per guard, so that each guard removed fails a case of its own.

    [Theory]
    [InlineData("no capacity")]
    [InlineData("a negative capacity")]
    [InlineData("a negative retention")]
    public void ARingNeedsACapacityAndANonNegativeRetention(string what)
    {
        Action make = what switch
        {
            "no capacity" => () => new RelayRing(0).Dispose(),
            "a negative capacity" => () => new RelayRing(-5).Dispose(),
            _ => () => new RelayRing(RelayRing.SlotSize, -1).Dispose(),
        };
        Assert.Throws<ArgumentOutOfRangeException>(make);
        using var smallest = new RelayRing(1, 0); // the smallest legal ring: four slots
        Assert.Equal(4, smallest.SlotCount);
    }

    [Fact]
    public async Task ARunOfNoSlotsIsRefused()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        // Bounded: a run of no slots would otherwise wait for space forever.
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => ring.AcquireRunAsync(0, default).AsTask().WaitAsync(Eventually.Deadline));
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

    [Theory]
    [InlineData("a receiver without a link")]
    [InlineData("a receiver without a ring")]
    [InlineData("a sender without a cursor")]
    [InlineData("a sender without a link")]
    [InlineData("a reader without a cursor")]
    [InlineData("a writer without a ring")]
    public void TheRelayPartsRefuseAMissingStreamOrRing(string what)
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        using var cursor = ring.Attach("c");
        Action make = what switch
        {
            "a receiver without a link" => () => _ = new FrameReceiver(null!, ring),
            "a receiver without a ring" => () => _ = new FrameReceiver(new MemoryStream(), null!),
            "a sender without a cursor" => () => _ = new ChildSender(null!, new MemoryStream()),
            "a sender without a link" => () => _ = new ChildSender(cursor, null!),
            "a reader without a cursor" => () => new RingReaderStream(null!).Dispose(),
            _ => () => new RingWriterStream(null!, default).Dispose(),
        };
        Assert.Throws<ArgumentNullException>(make);
    }

    [Theory]
    [InlineData("receiver")]
    [InlineData("writer")]
    public void ASealingWriterOrAnOpeningReceiverNeedsASealedRing(string what)
    {
        using var cipher = new StreamCipher(StreamKey, 7);
        using var clear = new RelayRing(4 * RelayRing.SlotSize);
        Action make = what == "receiver"
            ? () => _ = new FrameReceiver(new MemoryStream(), clear, cipher: cipher)
            : () => new RingWriterStream(clear, default, cipher).Dispose();
        Assert.Equal("ring", Assert.Throws<ArgumentException>(make).ParamName);
        using var sealedRing = new RelayRing(4 * (RelayRing.SlotSize + RelayRing.PlaintextSize), sealedFrames: true);
        _ = new FrameReceiver(new MemoryStream(), sealedRing, cipher: cipher);
        new RingWriterStream(sealedRing, default, cipher).Dispose();
    }
}
