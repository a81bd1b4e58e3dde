using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Security;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// What the relay's refusals of a caller's mistake say (their types are checked in <c>RelaySurvivorTests</c>; their
/// texts survived the 2026-11-27 <c>relay-unit.json</c> run). A wrong wiring of the ring must name itself in the log.
/// </summary>
public class RelayGuardTextTests
{
    [Fact]
    public void AClearRingRefusesSealedUseAndSaysWhy()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        using var cipher = new StreamCipher(RandomNumberGenerator.GetBytes(StreamCipher.KeySize), 1);
        Assert.Equal("a clear ring keeps no plaintext beside its frames",
            Assert.Throws<InvalidOperationException>(() => ring.PlaintextOf(new byte[RelayRing.SlotSize])).Message);
        Assert.StartsWith("a sealing writer needs a ring with sealed slots",
            Assert.Throws<ArgumentException>(() => new RingWriterStream(ring, default, cipher)).Message);
        Assert.StartsWith("an opening receiver needs a ring with sealed slots",
            Assert.Throws<ArgumentException>(() => new FrameReceiver(new MemoryStream(), ring, 0, cipher)).Message);
    }

    [Fact]
    public async Task APublishWithoutASlotAndAnAcquireAfterTheEndAreRefusedAndSayWhy()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var header = DataFrameHeader.Read(WireFrames.Data([1, 2, 3], 0));
        Assert.Equal("publishing a slot that was not acquired",
            Assert.Throws<InvalidOperationException>(() => ring.Publish(header, DataFrameHeader.Size + 3)).Message);

        var writer = new RingWriterStream(ring, default);
        await writer.CompleteAsync(0, DigestAlgorithm.Sha256, new byte[32], default);
        var e = await Assert.ThrowsAsync<InvalidOperationException>(async () => await ring.AcquireAsync(default));
        Assert.Equal("ring already completed", e.Message);
    }

    [Fact]
    public async Task AReaderOfAFaultedRingHearsTheUpstreamReason()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var cursor = ring.Attach("child");
        ring.Fault(new IOException("connection reset by node 3"));
        var e = await Assert.ThrowsAsync<KaDeployException>(async () => await cursor.NextAsync(default));
        Assert.Equal("upstream failed: connection reset by node 3", e.Message);
        // A child's sender reads runs of frames: the same reason by the other path.
        var sender = ring.Attach("sender");
        e = await Assert.ThrowsAsync<KaDeployException>(async () => await sender.NextRunAsync(1 << 20, default));
        Assert.Equal("upstream failed: connection reset by node 3", e.Message);
    }
}
