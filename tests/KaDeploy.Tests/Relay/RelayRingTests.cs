using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

public class RelayRingTests
{
    [Fact]
    public async Task ProducerWaitsForTheSlowestConsumerAndEveryoneSeesEveryByte()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var fast = ring.Attach("fast");
        var slow = ring.Attach("slow");
        var data = RandomNumberGenerator.GetBytes(3_000_000);
        var writer = new RingWriterStream(ring, default);
        var produce = Task.Run(async () =>
        {
            await writer.WriteAsync(data);
            await writer.CompleteAsync(data.Length, DigestAlgorithm.Sha256, SHA256.HashData(data), default);
        });
        var fastRead = ReadAllAsync(fast, 0);
        var slowRead = ReadAllAsync(slow, 2);
        Assert.Equal(data, await fastRead);
        Assert.Equal(data, await slowRead);
        await produce;
    }

    [Fact]
    public async Task ProducerIsHeldBackByAFullRing()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        using var stuck = ring.Attach("stuck");
        var writer = new RingWriterStream(ring, default);
        var big = new byte[5 * ProtocolConstants.MaxChunkPayload];
        var write = writer.WriteAsync(big).AsTask();
        // The ring names the consumer holding a waiting producer back: then the producer is surely waiting.
        await Eventually.HoldsAsync(() => ring.FindStalled(TimeSpan.Zero) == stuck, "the producer to wait on the full ring");
        Assert.False(write.IsCompleted); // 4 slots full, the 5th waits for the consumer
        Assert.Equal(4, ring.Published);
        var f = await stuck.NextAsync(default);
        stuck.Advance();
        await write.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(5, ring.Published);
    }

    [Fact]
    public async Task ALateCursorResumesFromARetainedOffset()
    {
        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        var writer = new RingWriterStream(ring, default);
        var data = RandomNumberGenerator.GetBytes(3 * ProtocolConstants.MaxChunkPayload);
        await writer.WriteAsync(data);
        long? seq = ring.FindSequence(ProtocolConstants.MaxChunkPayload + 10);
        Assert.Equal(1, seq);
        using var late = ring.Attach("late", seq!.Value);
        var frame = await late.NextAsync(default);
        Assert.Equal(ProtocolConstants.MaxChunkPayload, frame.Header.Offset);
        Assert.Throws<KaDeployException>(() => ring.Attach("future", 99));
    }

    [Fact]
    public async Task AFaultReachesWaitingConsumers()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        using var c = ring.Attach("c");
        var wait = c.NextAsync(default).AsTask();
        ring.Fault(new IOException("link reset"));
        var e = await Assert.ThrowsAsync<KaDeployException>(() => wait);
        Assert.Contains("link reset", e.Message);
    }

    [Fact]
    public async Task ReceiverRejectsACorruptedFrame()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var wire = new MemoryStream();
        var header = new DataFrameHeader(DataFrameType.Data, 4, 0, DataFrameHeader.ComputeChecksum([1, 2, 3, 4], 0));
        var buf = new byte[DataFrameHeader.Size];
        header.Write(buf);
        wire.Write(buf);
        wire.Write([1, 2, 3, 5]); // one bit flipped in transit
        wire.Position = 0;
        var e = await Assert.ThrowsAsync<ProtocolException>(() => new FrameReceiver(wire, ring).RunAsync(default));
        Assert.Contains("checksum mismatch", e.Message);
    }

    [Fact]
    public async Task ReceiverRejectsAGapAndATruncation()
    {
        var buf = new byte[DataFrameHeader.Size];
        using (var ring = new RelayRing(4 * RelayRing.SlotSize))
        {
            new DataFrameHeader(DataFrameType.Data, 0, 100, DataFrameHeader.ComputeChecksum([], 100)).Write(buf);
            var e = await Assert.ThrowsAsync<ProtocolException>(() => new FrameReceiver(new MemoryStream(buf), ring).RunAsync(default));
            Assert.Contains("expected 0", e.Message);
        }
        using (var ring = new RelayRing(4 * RelayRing.SlotSize))
        {
            new DataFrameHeader(DataFrameType.Data, 1000, 0, 0).Write(buf);
            var e = await Assert.ThrowsAsync<ProtocolException>(() => new FrameReceiver(new MemoryStream([.. buf, 1, 2, 3]), ring).RunAsync(default));
            Assert.Contains("closed the link", e.Message);
        }
    }

    private static async Task<byte[]> ReadAllAsync(RingCursor cursor, int delayMs)
    {
        var ms = new MemoryStream();
        using var reader = new RingReaderStream(cursor);
        var buf = new byte[77_777];
        int n;
        while ((n = await reader.ReadAsync(buf)) > 0)
        {
            ms.Write(buf, 0, n);
            if (delayMs > 0) await Task.Delay(delayMs);
        }
        Assert.NotNull(reader.End);
        Assert.Equal(ms.Length, reader.End.PayloadLength);
        return ms.ToArray();
    }
}
