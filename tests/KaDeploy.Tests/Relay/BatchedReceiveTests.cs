using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// Issue 10: the receiver reads as many bytes as the link has into a run of ring slots and parses the frames
/// in place; bytes that follow a short frame wait in a carry for the next slot. However the bytes are cut
/// into reads, every consumer must see exactly the frames that were sent, and a bad frame anywhere in a
/// batch must stop everything after it: never published, forwarded or written.
/// </summary>
public class BatchedReceiveTests
{
    private const int Chunk = ProtocolConstants.MaxChunkPayload;

    internal sealed record Outcome(Exception? ReceiverError, long Published, byte[] Forwarded, byte[] Written, Exception? WriteError);

    /// <summary>Runs a receiver over <paramref name="wire"/> delivered in reads cut by <paramref name="cut"/>, then drains both consumers.</summary>
    private static async Task<Outcome> ReceiveAsync(byte[] wire, Func<int, int, int> cut, int ringSlots = 40)
    {
        using var ring = new RelayRing((long)ringSlots * RelayRing.SlotSize);
        return await ReceiveThroughAsync(ring, () => new FrameReceiver(new CutStream(wire, cut), ring));
    }

    /// <summary>Runs the receiver into <paramref name="ring"/> with a child and the local sink attached, then drains both
    /// (clear and sealed rings alike).</summary>
    internal static async Task<Outcome> ReceiveThroughAsync(RelayRing ring, Func<FrameReceiver> receiver)
    {
        var child = ring.Attach("child");
        var local = ring.Attach("local");
        var error = await Record.ExceptionAsync(() => receiver().RunAsync(default));
        long published = ring.Published;
        var forwarded = new MemoryStream();
        await Record.ExceptionAsync(() => new ChildSender(child, forwarded).RunAsync(default));
        var written = new MemoryStream();
        using var reader = new RingReaderStream(local);
        var writeError = await Record.ExceptionAsync(() => reader.CopyToAsync(written));
        return new Outcome(error, published, forwarded.ToArray(), written.ToArray(), writeError);
    }

    internal static void Intact(Outcome o, List<byte[]> frames, byte[] payload, string what)
    {
        Assert.True(o.ReceiverError is null, $"{what}: {o.ReceiverError}");
        Assert.Equal(frames.Count, o.Published);
        Assert.True(WireFrames.Concat(frames).AsSpan().SequenceEqual(o.Forwarded), $"{what}: forwarded bytes differ");
        Assert.True(payload.AsSpan().SequenceEqual(o.Written), $"{what}: written bytes differ");
    }

    [Fact]
    public async Task ManyFullFramesInOneReadArriveIntact()
    {
        // 20 full frames and a short last one: runs of 16 slots, a second run, the carry for the End frame.
        var payload = RandomNumberGenerator.GetBytes(20 * Chunk + 777);
        var frames = WireFrames.Stream(payload, Chunk);
        Intact(await ReceiveAsync(WireFrames.Concat(frames), (_, left) => left), frames, payload, "one read");
    }

    [Fact]
    public async Task FullFramesSplitAtEveryPositionAroundTheirBoundariesArriveIntact()
    {
        var payload = RandomNumberGenerator.GetBytes(3 * Chunk + 100);
        var frames = WireFrames.Stream(payload, Chunk);
        var wire = WireFrames.Concat(frames);
        int frame = DataFrameHeader.Size + Chunk;
        // Two reads, cut anywhere near a header or the end of a frame (every position there), and at random places.
        var cuts = new SortedSet<int>();
        foreach (int boundary in new[] { 0, frame, 2 * frame, 3 * frame, wire.Length - DataFrameHeader.Size - DataFrameHeader.EndPayloadSize })
            for (int d = -DataFrameHeader.Size - 2; d <= DataFrameHeader.Size + 2; d++)
                if (boundary + d > 0 && boundary + d < wire.Length) cuts.Add(boundary + d);
        var random = new Random(10);
        for (int i = 0; i < 40; i++) cuts.Add(random.Next(1, wire.Length));
        foreach (int at in cuts)
            Intact(await ReceiveAsync(wire, (read, left) => read == 0 ? at : left), frames, payload, $"cut at {at}");
    }

    [Fact]
    public async Task SmallFramesCutIntoReadsOfEverySizeArriveIntact()
    {
        // A peer that sends short frames everywhere: every frame leaves the rest of its read to the carry.
        var payload = RandomNumberGenerator.GetBytes(700);
        var frames = WireFrames.Stream(payload, 37);
        var wire = WireFrames.Concat(frames);
        for (int size = 1; size <= wire.Length; size += size < 200 ? 1 : 97)
            Intact(await ReceiveAsync(wire, (_, left) => Math.Min(size, left)), frames, payload, $"reads of {size}");
        // And every single split into two reads.
        for (int at = 1; at < wire.Length; at++)
            Intact(await ReceiveAsync(wire, (read, left) => read == 0 ? at : left), frames, payload, $"cut at {at}");
    }

    [Fact]
    public async Task MixedFrameSizesInOneSmallRingArriveIntact()
    {
        // Full frames with short ones before and after them, in a ring of exactly as many slots as frames (one
        // segment of 5: the consumers drain after the receiver has stopped).
        var payload = RandomNumberGenerator.GetBytes(2 * Chunk + 50);
        var frames = new List<byte[]>
        {
            WireFrames.Data(payload.AsSpan(0, 10), 0),
            WireFrames.Data(payload.AsSpan(10, Chunk), 10),
            WireFrames.Data(payload.AsSpan(10 + Chunk, Chunk), 10 + Chunk),
            WireFrames.Data(payload.AsSpan(10 + 2 * Chunk, 40), 10 + 2 * Chunk),
            WireFrames.End(payload.Length, payload.Length, SHA256.HashData(payload)),
        };
        var wire = WireFrames.Concat(frames);
        foreach (int size in new[] { 1, 7, 32, 33, 1000, Chunk, Chunk + 32, Chunk + 42, wire.Length })
            Intact(await ReceiveAsync(wire, (_, left) => Math.Min(size, left), ringSlots: 5), frames, payload, $"reads of {size}");
    }

    [Theory]
    [InlineData(0)]  // the first frame of the read
    [InlineData(5)]  // in the middle of a run
    [InlineData(15)] // the last slot of the first run
    [InlineData(16)] // the first slot of the second run
    public async Task ACorruptedFrameInTheMiddleOfABatchStopsEverythingAfterIt(int bad)
    {
        var payload = RandomNumberGenerator.GetBytes(20 * Chunk);
        var frames = WireFrames.Stream(payload, Chunk);
        frames[bad][DataFrameHeader.Size + 1000] ^= 0x10;
        var wire = WireFrames.Concat(frames);
        foreach (Func<int, int, int> cut in new Func<int, int, int>[] { (_, left) => left, (_, left) => Math.Min(3 * Chunk + 5, left) })
        {
            var o = await ReceiveAsync(wire, cut);
            Assert.Contains("checksum mismatch", Assert.IsType<ProtocolException>(o.ReceiverError).Message);
            Assert.Equal(bad, o.Published);                              // the good frames before it, and nothing else
            Assert.Equal(WireFrames.Concat(frames.Take(bad)), o.Forwarded);
            Assert.Equal(payload[..(bad * Chunk)], o.Written);
            Assert.IsType<KaDeployException>(o.WriteError);              // the sink learns the upstream failed
        }
    }

    [Fact]
    public async Task ABadHeaderAfterAShortFrameInTheSameReadIsNeverPublished()
    {
        var payload = RandomNumberGenerator.GetBytes(300);
        var frames = WireFrames.Stream(payload, 100);
        frames[2][0] ^= 0xFF; // bad magic in the third frame, which arrives from the carry
        var o = await ReceiveAsync(WireFrames.Concat(frames), (_, left) => left);
        Assert.IsType<ProtocolException>(o.ReceiverError);
        Assert.Equal(2, o.Published);
        Assert.Equal(payload[..200], o.Written);
    }

    /// <summary>A link that hands out <c>wire</c> in reads whose sizes <c>cut(readIndex, bytesLeft)</c> decides (at most what is asked).</summary>
    internal sealed class CutStream(byte[] wire, Func<int, int, int> cut) : IO.SequentialReadStream
    {
        private int _position;
        private int _reads;

        public override int Read(Span<byte> buffer)
        {
            int left = wire.Length - _position;
            if (left == 0 || buffer.IsEmpty) return 0;
            int n = Math.Min(buffer.Length, Math.Clamp(cut(_reads++, left), 1, left));
            wire.AsSpan(_position, n).CopyTo(buffer);
            _position += n;
            return n;
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(Read(buffer.Span));
    }
}
