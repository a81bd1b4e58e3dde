using System.Security.Cryptography;
using KaDeploy.IO;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// The parts of Relay/ that only whole sessions used to reach (Stryker's "no coverage" in tests/README.md):
/// the digesting streams that decide "verified", the End frame's layout, the tee to the spool, a child
/// sender that skips what a re-attached child already holds, the local sink's reader at its edges, and the
/// stall watch that gives up on a hung consumer. Each test checks values it computes itself.
/// </summary>
public class RelayEdgeTests
{
    private static readonly byte[] Data = RandomNumberGenerator.GetBytes(10_000);

    /// <summary>A sink that records writes and counts flushes.</summary>
    private sealed class Recorder : SequentialWriteStream
    {
        public readonly MemoryStream Bytes = new();
        public int Flushes;
        public override void Write(ReadOnlySpan<byte> buffer) => Bytes.Write(buffer);
        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void Flush() => Flushes++;
        public override Task FlushAsync(CancellationToken cancellationToken) { Flushes++; return Task.CompletedTask; }
    }

    /// <summary>A source that lends segments (as the ring's reader does), counting them.</summary>
    private sealed class Lender(byte[][] segments) : SequentialReadStream, ISegmentReader
    {
        private int _next;
        public int Lent;
        public override int Read(Span<byte> buffer) => throw new InvalidOperationException("a lender is read by segments");
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
        public ValueTask<ReadOnlyMemory<byte>> ReadSegmentAsync(CancellationToken cancellationToken)
        {
            if (_next == segments.Length) return ValueTask.FromResult(ReadOnlyMemory<byte>.Empty);
            Lent++;
            return ValueTask.FromResult<ReadOnlyMemory<byte>>(segments[_next++]);
        }
    }

    /// <summary>A source that gives at most <paramref name="most"/> bytes per read, as a socket may.</summary>
    private sealed class Trickle(byte[] data, int most) : SequentialReadStream
    {
        private int _at;
        public override int Read(Span<byte> buffer)
        {
            int n = Math.Min(Math.Min(buffer.Length, most), data.Length - _at);
            data.AsSpan(_at, n).CopyTo(buffer);
            _at += n;
            return n;
        }
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
    }

    // ---- EndOfStream ----

    [Theory]
    [InlineData(DigestAlgorithm.Sha256)]
    [InlineData(DigestAlgorithm.Blake3)]
    [InlineData(DigestAlgorithm.XxHash128)]
    public void TheEndFramePayloadIsWireLengthPayloadLengthAlgorithmAndDigest(DigestAlgorithm algorithm)
    {
        var digest = RandomNumberGenerator.GetBytes(PayloadDigest.Size);
        var end = new EndOfStream(0x0102030405060708, 0x1112131415161718, algorithm, digest);
        var payload = new byte[DataFrameHeader.EndPayloadSize];
        end.Write(payload);
        // The layout of docs/protocol.md section 3, read back by hand.
        Assert.Equal(0x0102030405060708, BitConverter.ToInt64(payload, 0));
        Assert.Equal(0x1112131415161718, BitConverter.ToInt64(payload, 8));
        Assert.Equal((byte)algorithm, payload[16]);
        Assert.Equal(digest, payload[17..(17 + PayloadDigest.Size)]);
        var back = EndOfStream.Parse(payload);
        Assert.Equal(end.WireLength, back.WireLength);
        Assert.Equal(end.PayloadLength, back.PayloadLength);
        Assert.Equal(algorithm, back.Algorithm);
        Assert.Equal(digest, back.Digest);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(200)]
    public void AnEndFrameNamingNoKnownAlgorithmIsRefusedWithItsNumber(byte algorithm)
    {
        var payload = new byte[DataFrameHeader.EndPayloadSize];
        new EndOfStream(1, 1, DigestAlgorithm.Sha256, new byte[32]).Write(payload);
        payload[16] = algorithm;
        if (Enum.IsDefined((DigestAlgorithm)algorithm)) return; // 0 may be a real algorithm one day
        var e = Assert.Throws<ProtocolException>(() => EndOfStream.Parse(payload));
        Assert.Equal($"End frame names unknown digest algorithm {algorithm}", e.Message);
    }

    // ---- the digesting streams ----

    [Theory]
    [InlineData(DigestAlgorithm.Sha256)]
    [InlineData(DigestAlgorithm.Blake3)]
    [InlineData(DigestAlgorithm.XxHash128)]
    public async Task TheWriteDigestCountsAndHashesEveryByteOnItsWayThrough(DigestAlgorithm algorithm)
    {
        var inner = new Recorder();
        using var digest = new DigestWriteStream(inner, algorithm);
        Assert.Equal(algorithm, digest.Algorithm);
        digest.Write(Data.AsSpan(0, 100));
        digest.Write(Data, 100, 900);
        await digest.WriteAsync(Data.AsMemory(1000, 4000));
        await digest.WriteAsync(Data, 5000, 5000);
        digest.Flush();
        await digest.FlushAsync();
        Assert.Equal(Data.Length, digest.Length64);
        Assert.Equal(Data.Length, digest.Length);
        Assert.Equal(Data.Length, digest.Position);
        Assert.Throws<NotSupportedException>(() => digest.Position = 0);
        Assert.Equal(Data, inner.Bytes.ToArray());
        Assert.Equal(2, inner.Flushes);
        Assert.Equal(PayloadDigest.Of(algorithm, Data), digest.Digest());
    }

    [Theory]
    [InlineData(DigestAlgorithm.Sha256)]
    [InlineData(DigestAlgorithm.Blake3)]
    [InlineData(DigestAlgorithm.XxHash128)]
    public async Task TheReadDigestCountsAndHashesWhatIsReadThenDrainsTheRest(DigestAlgorithm algorithm)
    {
        using var digest = new DigestReadStream(new Trickle(Data, 777), algorithm);
        Assert.Equal(algorithm, digest.Algorithm);
        var got = new MemoryStream();
        var buffer = new byte[700];
        int n = digest.Read(buffer.AsSpan(0, 100));
        got.Write(buffer, 0, n);
        n = digest.Read(buffer, 0, 700);
        got.Write(buffer, 0, n);
        n = await digest.ReadAsync(buffer.AsMemory(0, 300));
        got.Write(buffer, 0, n);
        n = await digest.ReadAsync(buffer, 0, 500);
        got.Write(buffer, 0, n);
        Assert.Equal(got.Length, digest.BytesRead);
        Assert.Equal(got.Length, digest.Position);
        Assert.Equal(Data[..(int)got.Length], got.ToArray());
        Assert.True(got.Length < Data.Length);
        await digest.DrainAsync(default); // what the sink left unread still counts, however many reads it takes
        Assert.Equal(Data.Length, digest.BytesRead);
        Assert.Equal(PayloadDigest.Of(algorithm, Data), digest.Digest());
    }

    [Fact]
    public async Task TheReadDigestLendsTheSegmentsOfALenderWithoutACopyAndHashesThem()
    {
        byte[][] segments = [Data[..3000], Data[3000..3001], Data[3001..]];
        var lender = new Lender(segments);
        using var digest = new DigestReadStream(lender, DigestAlgorithm.Blake3);
        foreach (var s in segments)
        {
            var lent = await digest.ReadSegmentAsync(default);
            Assert.True(System.Runtime.InteropServices.MemoryMarshal.TryGetArray(lent, out var array));
            Assert.Same(s, array.Array); // the lender's own memory
        }
        Assert.True((await digest.ReadSegmentAsync(default)).IsEmpty);
        Assert.Equal(3, lender.Lent);
        Assert.Equal(Data.Length, digest.BytesRead);
        Assert.Equal(PayloadDigest.Of(DigestAlgorithm.Blake3, Data), digest.Digest());
    }

    [Fact]
    public async Task TheReadDigestReadsSegmentsFromAPlainStreamIntoItsOwnBuffer()
    {
        using var digest = new DigestReadStream(new MemoryStream(Data), DigestAlgorithm.XxHash128);
        var got = new MemoryStream();
        while (await digest.ReadSegmentAsync(default) is { IsEmpty: false } s) got.Write(s.Span);
        Assert.Equal(Data, got.ToArray());
        Assert.Equal(Data.Length, digest.BytesRead);
        Assert.Equal(PayloadDigest.Of(DigestAlgorithm.XxHash128, Data), digest.Digest());
    }

    // ---- the tee to the spool ----

    [Fact]
    public async Task TheTeeWritesEverythingToBothStreamsAndFlushesBoth()
    {
        var first = new Recorder();
        var second = new Recorder();
        var tee = new TeeWriteStream(first, second);
        tee.Write(Data.AsSpan(0, 10));
        tee.Write(Data, 10, 90);
        await tee.WriteAsync(Data.AsMemory(100, 900));
        await tee.WriteAsync(Data, 1000, 9000);
        tee.Flush();
        await tee.FlushAsync();
        Assert.Equal(Data, first.Bytes.ToArray());
        Assert.Equal(Data, second.Bytes.ToArray());
        Assert.Equal(2, first.Flushes);
        Assert.Equal(2, second.Flushes);
    }

    // ---- the child sender ----

    private static async Task<RelayRing> ProducedRing(byte[] data)
    {
        var ring = new RelayRing(64 * RelayRing.SlotSize);
        var writer = new RingWriterStream(ring, default);
        await writer.WriteAsync(data);
        await writer.CompleteAsync(data.Length, DigestAlgorithm.Sha256, SHA256.HashData(data), default);
        return ring;
    }

    [Fact]
    public async Task AChildSenderSkipsTheDataFramesBelowItsOffsetButNeverTheEnd()
    {
        const int chunk = ProtocolConstants.MaxChunkPayload;
        var data = RandomNumberGenerator.GetBytes(3 * chunk + 100);
        using var ring = await ProducedRing(data);
        var all = new MemoryStream();
        await new ChildSender(ring.Attach("all"), all).RunAsync(default);
        var frames = Split(all.ToArray());
        Assert.Equal(5, frames.Count); // 4 Data + End

        // A child that already holds the first two frames gets the rest, byte for byte.
        var skipping = new MemoryStream();
        var sender = new ChildSender(ring.Attach("resumed"), skipping, skipBelow: 2 * chunk);
        await sender.RunAsync(default);
        Assert.Equal(WireFrames.Concat(frames.Skip(2)), skipping.ToArray());
        Assert.Equal(skipping.Length, sender.SentBytes);

        // Skipping past the data still sends the End frame: the child learns the stream is whole.
        var endOnly = new MemoryStream();
        await new ChildSender(ring.Attach("ahead"), endOnly, skipBelow: long.MaxValue).RunAsync(default);
        Assert.Equal(frames[^1], endOnly.ToArray());

    }

    private static List<byte[]> Split(byte[] wire)
    {
        var frames = new List<byte[]>();
        for (int at = 0; at < wire.Length;)
        {
            var h = DataFrameHeader.Read(wire.AsSpan(at));
            int n = DataFrameHeader.Size + h.PayloadLength;
            frames.Add(wire[at..(at + n)]);
            at += n;
        }
        return frames;
    }

    [Fact]
    public async Task AChildSenderDetachesFromTheRingHoweverItEnds()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var cursor = ring.Attach("child");
        using var cts = new CancellationTokenSource();
        var run = new ChildSender(cursor, new MemoryStream()).RunAsync(cts.Token);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run);
        // Detached: the producer can fill the whole ring again and again without waiting for it (a bounded
        // deadline, so that a cursor left attached fails the test instead of hanging it).
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        for (int i = 0; i < 3 * ring.SlotCount; i++)
        {
            var slot = await ring.AcquireAsync(deadline.Token);
            var payload = new byte[1];
            var header = new DataFrameHeader(DataFrameType.Data, 1, i, DataFrameHeader.ComputeChecksum(payload, i));
            header.Write(slot.Span);
            ring.Publish(header, DataFrameHeader.Size + 1);
        }
        Assert.Null(ring.Holder());
    }

    // ---- the local sink's reader ----

    [Fact]
    public async Task TheRingReaderGivesThePayloadByEveryReadAndThenTheEnd()
    {
        const int chunk = ProtocolConstants.MaxChunkPayload;
        var data = RandomNumberGenerator.GetBytes(2 * chunk + 5);
        using var ring = await ProducedRing(data);

        using var sync = new RingReaderStream(ring.Attach("sync"));
        var got = new MemoryStream();
        var buffer = new byte[7000];
        Assert.Equal(0, sync.Read(Span<byte>.Empty)); // an empty read takes nothing
        int n;
        while ((n = sync.Read(buffer, 0, buffer.Length)) > 0) got.Write(buffer, 0, n);
        Assert.Equal(data, got.ToArray());
        Assert.Equal(data.Length, sync.WireBytes);
        Assert.Equal(data.Length, sync.Position);
        Assert.NotNull(sync.End);
        Assert.Equal(data.Length, sync.End!.PayloadLength);
        Assert.Equal(SHA256.HashData(data), sync.End.Digest);
        Assert.Equal(0, sync.Read(buffer, 0, buffer.Length)); // and stays at its end

        using var segments = new RingReaderStream(ring.Attach("segments"));
        got.SetLength(0);
        while (await segments.ReadSegmentAsync(default) is { IsEmpty: false } s) got.Write(s.Span);
        Assert.Equal(data, got.ToArray());
        Assert.Equal(data.Length, segments.WireBytes);
        Assert.True((await segments.ReadSegmentAsync(default)).IsEmpty);
        Assert.Equal(0, await segments.ReadAsync(buffer));
    }

    [Fact]
    public async Task TheRingReaderPassesOverEmptyDataFrames()
    {
        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        byte[][] frames = [WireFrames.Data([], 0), WireFrames.Data([1, 2, 3], 0), WireFrames.Data([], 3), .. WireFrames.Stream([1, 2, 3], 3).Skip(1)];
        foreach (var f in frames)
        {
            var slot = ring.Acquire(default);
            f.CopyTo(slot.Span);
            ring.Publish(DataFrameHeader.Read(f), f.Length);
        }
        using var reader = new RingReaderStream(ring.Attach("sink"));
        var got = new MemoryStream();
        while (await reader.ReadSegmentAsync(default) is { IsEmpty: false } s) got.Write(s.Span);
        Assert.Equal([1, 2, 3], got.ToArray());
        Assert.NotNull(reader.End);
    }

    // ---- the stall watch ----

    [Fact]
    public async Task AStallWatchWithoutALimitDoesNothing()
    {
        using var ring = new RelayRing(2 * RelayRing.SlotSize);
        var logged = new List<string>();
        await StallWatch.RunAsync(ring, TimeSpan.Zero, logged.Add, default); // returns at once, no cancellation needed
        await StallWatch.RunAsync(ring, TimeSpan.FromSeconds(-1), logged.Add, default);
        Assert.Empty(logged);
    }

    [Fact]
    public async Task AStallWatchGivesUpOnTheConsumerThatHoldsAFullRingAndSaysWhy()
    {
        using var ring = new RelayRing(2 * RelayRing.SlotSize);
        var moving = ring.Attach("child 2");
        var hung = ring.Attach("child 7");
        using var stop = new CancellationTokenSource();
        var logged = new List<string>();
        var watch = StallWatch.RunAsync(ring, TimeSpan.FromSeconds(1), r => { lock (logged) logged.Add(r); }, stop.Token);
        // The producer fills the ring; "child 2" takes everything, "child 7" nothing, so the producer waits on it.
        var producing = Task.Run(async () =>
        {
            for (int i = 0; i < 4 * ring.SlotCount; i++)
            {
                var slot = await ring.AcquireAsync(default);
                var payload = new byte[] { (byte)i };
                var header = new DataFrameHeader(DataFrameType.Data, 1, i, DataFrameHeader.ComputeChecksum(payload, i));
                header.Write(slot.Span);
                payload.CopyTo(slot.Span[DataFrameHeader.Size..]);
                ring.Publish(header, DataFrameHeader.Size + 1);
            }
        });
        var draining = Task.Run(async () =>
        {
            for (int i = 0; i < 4 * ring.SlotCount; i++) { await moving.NextAsync(default); moving.Advance(); }
        });
        // Bounded waits on the outcome, not on time: a stalled watch fails here instead of hanging.
        string reason = await hung.Evicted.WaitAsync(TimeSpan.FromSeconds(60));
        await Task.WhenAll(producing, draining).WaitAsync(TimeSpan.FromSeconds(60)); // the others went on
        stop.Cancel();
        await watch.WaitAsync(TimeSpan.FromSeconds(60)); // cancellation ends it quietly
        Assert.Equal("child 7 took nothing for 1 s while the relay buffer was full; given up so the others go on", reason);
        Assert.Equal(reason, hung.EvictedReason);
        lock (logged) Assert.Equal([reason], logged);
        Assert.Null(moving.EvictedReason);
    }
}
