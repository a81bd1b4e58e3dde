using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// The server's spool (issue 8), in memory the ring's own retention since issue 10: frames are served from the
/// slots they were produced into, and a reader of those slots holds the producer back instead of seeing them
/// overwritten.
/// </summary>
public class StreamSpoolTests
{
    private const int Chunk = ProtocolConstants.MaxChunkPayload;

    // Produces data (and the End frame) into the ring while one fast consumer (a child) drains it.
    private static async Task ProduceDrainedAsync(RelayRing ring, byte[] data)
    {
        var child = ring.Attach("child");
        var draining = Task.Run(async () =>
        {
            while (true)
            {
                var f = await child.NextAsync(default);
                child.Advance();
                if (f.Header.Type == DataFrameType.End) break;
            }
            child.Dispose();
        });
        var writer = new RingWriterStream(ring, default);
        await writer.WriteAsync(data);
        await writer.CompleteAsync(data.Length, DigestAlgorithm.XxHash128, PayloadDigest.Of(DigestAlgorithm.XxHash128, data), default);
        await draining;
    }

    // Parses what a spool wrote: every frame checked, payloads concatenated; the first frame's offset and the End frame returned.
    private static (long FirstOffset, byte[] Payload, EndOfStream End) ParseServed(byte[] wire)
    {
        long? first = null;
        var payload = new MemoryStream();
        int at = 0;
        while (true)
        {
            var h = DataFrameHeader.Read(wire.AsSpan(at, DataFrameHeader.Size));
            var body = wire.AsSpan(at + DataFrameHeader.Size, h.PayloadLength);
            Assert.Equal(DataFrameHeader.ComputeChecksum(body, h.Offset), h.Checksum);
            first ??= h.Offset;
            at += DataFrameHeader.Size + h.PayloadLength;
            if (h.Type == DataFrameType.End)
            {
                Assert.Equal(wire.Length, at);
                return (first.Value, payload.ToArray(), EndOfStream.Parse(body));
            }
            Assert.Equal(first.Value + payload.Length, h.Offset);
            payload.Write(body);
        }
    }

    [Fact]
    public async Task TheMemorySpoolServesFromAnOffsetEveryConsumerHasPassed()
    {
        // A window of 4 slots and 16 retained: the child has taken all 12 frames, the spool still holds them in place.
        using var ring = new RelayRing(4 * RelayRing.SlotSize, 16 * RelayRing.SlotSize);
        using var spool = StreamSpool.InRing(ring);
        Assert.False(spool.NeedsFeed);
        var data = RandomNumberGenerator.GetBytes(12 * Chunk);
        await ProduceDrainedAsync(ring, data);

        Assert.Null(spool.CannotServe(2 * Chunk));
        var served = new MemoryStream();
        await spool.ServeAsync(served, 2 * Chunk, default);
        var (first, payload, end) = ParseServed(served.ToArray());
        Assert.Equal(2 * Chunk, first);
        Assert.Equal(data.AsSpan(2 * Chunk).ToArray(), payload);
        Assert.Equal(data.Length, end.PayloadLength);
    }

    [Fact]
    public async Task AnOffsetTheMemorySpoolLetGoIsRefusedWithTheReason()
    {
        // 8 slots in all: after 20 frames, offset 0 is long overwritten.
        using var ring = new RelayRing(4 * RelayRing.SlotSize, 4 * RelayRing.SlotSize);
        using var spool = StreamSpool.InRing(ring);
        await ProduceDrainedAsync(ring, RandomNumberGenerator.GetBytes(20 * Chunk));

        Assert.Contains("older than the spool holds", spool.CannotServe(0));
        Assert.Contains("use --spool DIR", spool.CannotServe(0));
        Assert.Contains("not in the stream", spool.CannotServe(40L * Chunk));
        var e = await Assert.ThrowsAsync<KaDeployException>(() => spool.ServeAsync(new MemoryStream(), 0, default));
        Assert.Contains("left the memory spool", e.Message);
    }

    [Fact]
    public async Task AReaderOfTheMemorySpoolHoldsTheProducerBackSoNothingItStillNeedsIsOverwritten()
    {
        // 8 slots in all and 40 frames to go: a reader that starts at the oldest retained frame while production goes on
        // would see its frames overwritten if it read them in place without holding them.
        using var ring = new RelayRing(4 * RelayRing.SlotSize, 4 * RelayRing.SlotSize);
        using var spool = StreamSpool.InRing(ring);
        var data = RandomNumberGenerator.GetBytes(40 * Chunk);
        var child = ring.Attach("child");
        var writer = new RingWriterStream(ring, default);
        // 8 frames, taken by the child as they come (the window is 4): all 8 slots now hold frames nobody reads.
        var firstEight = Task.Run(async () => { for (int i = 0; i < 8; i++) { await child.NextAsync(default); child.Advance(); } });
        await writer.WriteAsync(data.AsMemory(0, 8 * Chunk));
        await firstEight;
        Assert.Null(spool.CannotServe(0));

        Task? producing = null;
        // Each write waits until the producer has gone as far as it can (it waits on the ring, or is done): a slot the
        // reader let go before writing it would be overwritten by then.
        var served = new SlowStream(() => ring.Holder() is not null || producing?.IsCompleted == true);
        var serving = spool.ServeAsync(served, 0, default);
        producing = Task.Run(async () =>
        {
            await writer.WriteAsync(data.AsMemory(8 * Chunk));
            await writer.CompleteAsync(data.Length, DigestAlgorithm.XxHash128, PayloadDigest.Of(DigestAlgorithm.XxHash128, data), default);
        });
        var draining = Task.Run(async () =>
        {
            while ((await child.NextAsync(default)).Header.Type != DataFrameType.End) child.Advance();
            child.Dispose();
        });
        await Task.WhenAll(serving, producing, draining).WaitAsync(Eventually.Deadline);

        var (first, payload, _) = ParseServed(served.ToArray());
        Assert.Equal(0, first);
        Assert.Equal(data, payload);
    }

    [Fact]
    public async Task TheFileSpoolServesEveryFrameFromAnOffset()
    {
        var dir = Directory.CreateTempSubdirectory("kd-spool-");
        try
        {
            using var ring = new RelayRing(4 * RelayRing.SlotSize);
            using var spool = new StreamSpool(dir.FullName);
            Assert.True(spool.NeedsFeed);
            var feeding = spool.RunAsync(ring.Attach("spool"), default);
            var data = RandomNumberGenerator.GetBytes(10 * Chunk + 123);
            await ProduceDrainedAsync(ring, data);
            await feeding;

            var served = new MemoryStream();
            await spool.ServeAsync(served, 3 * Chunk, default);
            var (first, payload, _) = ParseServed(served.ToArray());
            Assert.Equal(3 * Chunk, first);
            Assert.Equal(data.AsSpan(3 * Chunk).ToArray(), payload);
            Assert.Contains("not a frame boundary", spool.CannotServe(3 * Chunk + 1));
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    // A link that takes its time: each write first waits for the test's condition.
    private sealed class SlowStream(Func<bool> ready) : MemoryStream
    {
        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await Eventually.HoldsAsync(ready, "the producer to go as far as it can");
            await base.WriteAsync(buffer, cancellationToken);
        }
    }
}
