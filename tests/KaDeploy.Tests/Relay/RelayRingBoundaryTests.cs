using System.Runtime.InteropServices;
using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// The ring's bookkeeping at its edges (window, retention, which frame holds an offset, who holds the
/// producer back) and the receiver's less travelled paths (Abort, a lost link, a resumed link): written
/// against the mutants Stryker left alive in <c>Relay/</c>. No timing: a producer "waits" when its
/// acquire did not complete synchronously, and is released by the consumer's Advance.
/// </summary>
public class RelayRingBoundaryTests
{
    // A bound on waiting for a release the test has just caused (never a timing assertion).
    private static readonly TimeSpan Deadline = Eventually.Deadline;

    // Publishes Data frames of `size` bytes at consecutive offsets from `start`, as a receiver would.
    private static void PublishData(RelayRing ring, int frames, int size, long start = 0)
    {
        for (int i = 0; i < frames; i++)
        {
            ValueTask<Memory<byte>> slot = ring.AcquireAsync(default);
            Assert.True(slot.IsCompletedSuccessfully, $"frame {i}: the ring had no free slot");
            ring.Publish(new DataFrameHeader(DataFrameType.Data, size, start + (long)i * size, 0), DataFrameHeader.Size + size);
        }
    }

    private static void PublishEnd(RelayRing ring, long offset)
    {
        Assert.True(ring.AcquireAsync(default).IsCompletedSuccessfully);
        ring.Publish(new DataFrameHeader(DataFrameType.End, DataFrameHeader.EndPayloadSize, offset, 0), DataFrameHeader.Size + DataFrameHeader.EndPayloadSize);
    }

    [Theory]
    [InlineData(1, 0, 4, 4)]                                    // never fewer than four slots
    [InlineData(5 * RelayRing.SlotSize, 0, 5, 5)]
    [InlineData(5 * RelayRing.SlotSize + RelayRing.SlotSize - 1, 0, 5, 5)] // whole slots only
    [InlineData(5 * RelayRing.SlotSize, 1, 5, 6)]               // one byte retained takes a whole slot
    [InlineData(5 * RelayRing.SlotSize, 2 * RelayRing.SlotSize, 5, 7)]
    [InlineData(5 * RelayRing.SlotSize, 2 * RelayRing.SlotSize + 1, 5, 8)]
    public void WindowAndRetentionAreCountedInWholeSlots(long capacity, long retain, int window, int slots)
    {
        using var ring = new RelayRing(capacity, retain);
        Assert.Equal(window, ring.WindowSlots);
        Assert.Equal(slots, ring.SlotCount);
    }

    [Fact]
    public async Task ASealedRingHasRoomForThePlaintextInEachSlot()
    {
        using var ring = new RelayRing(8 * (RelayRing.SlotSize + ProtocolConstants.MaxChunkPayload), sealedFrames: true);
        Assert.True(ring.IsSealed);
        Assert.Equal(8, ring.WindowSlots);
        // The wire slots of a run lie back to back (one receive, one send), each with a plaintext area of its own.
        Memory<byte> run = await ring.AcquireRunAsync(8, default);
        Assert.Equal(8 * RelayRing.SlotSize, run.Length);
        Assert.True(MemoryMarshal.TryGetArray<byte>(run, out var segment));
        var taken = new List<(int From, int To)> { (segment.Offset, segment.Offset + run.Length) };
        for (int i = 0; i < 8; i++)
        {
            var plain = ring.PlaintextOf(run.Slice(i * RelayRing.SlotSize, RelayRing.SlotSize));
            Assert.Equal(ProtocolConstants.MaxChunkPayload, plain.Length);
            Assert.True(MemoryMarshal.TryGetArray<byte>(plain, out var p));
            Assert.Same(segment.Array, p.Array);
            Assert.DoesNotContain(taken, t => p.Offset < t.To && t.From < p.Offset + p.Count); // overlaps nothing
            taken.Add((p.Offset, p.Offset + p.Count));
        }
        using var clear = new RelayRing(8 * RelayRing.SlotSize);
        Assert.False(clear.IsSealed);
        Assert.Equal(RelayRing.SlotSize, (await clear.AcquireAsync(default)).Length);
        Assert.Throws<InvalidOperationException>(() => clear.PlaintextOf(run));
    }

    [Fact]
    public async Task TheProducerStopsExactlyAWindowAheadOfTheSlowestConsumer()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize, retainBytes: 4 * RelayRing.SlotSize);
        using var slow = ring.Attach("slow");
        PublishData(ring, 4, 100);
        ValueTask<Memory<byte>> fifth = ring.AcquireAsync(default);
        Assert.False(fifth.IsCompleted);               // four frames ahead of "slow": the window is full
        Assert.Same(slow, ring.Holder());
        Assert.Same(slow, ring.FindStalled(TimeSpan.Zero));
        Assert.Null(ring.FindStalled(TimeSpan.FromHours(1)));
        Assert.True(slow.NextAsync(default).IsCompletedSuccessfully);
        slow.Advance();
        await fifth.AsTask().WaitAsync(Deadline);      // released by the consumer, not by a timer
        Assert.Null(ring.Holder());                    // nobody holds the producer back now
    }

    [Fact]
    public void NoConsumerHoldsTheProducerBackWhenItIsNotWaiting()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        using var c = ring.Attach("c");
        PublishData(ring, 3, 100);
        Assert.Null(ring.Holder());
        Assert.Null(ring.FindStalled(TimeSpan.Zero));
    }

    [Fact]
    public void ACursorCanAttachAnywhereInTheRetainedRangeAndNowhereElse()
    {
        // 4 window + 2 retained slots; 8 frames published by a ring whose consumer kept up.
        using var ring = new RelayRing(4 * RelayRing.SlotSize, retainBytes: 2 * RelayRing.SlotSize);
        PublishData(ring, 8, 100);
        Assert.Equal(8, ring.Published);
        // Sequences 2..7 are still held (6 slots); 8 is the next to come.
        foreach (long s in new long[] { 2, 7, 8 }) ring.Attach($"at {s}", s).Dispose();
        Assert.Equal("at 1: frame 1 is no longer (or not yet) in the buffer",
            Assert.Throws<KaDeployException>(() => ring.Attach("at 1", 1)).Message);
        Assert.Throws<KaDeployException>(() => ring.Attach("at 9", 9));
    }

    [Fact]
    public void FindSequenceNamesTheFrameHoldingAnOffset()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize, retainBytes: 4 * RelayRing.SlotSize);
        Assert.Equal(0, ring.FindSequence(0));          // nothing yet: the first frame to come
        Assert.Null(ring.FindSequence(1));
        PublishData(ring, 5, 1000, start: 0);
        Assert.Equal(5000, ring.NextOffset);
        Assert.Equal(0, ring.FindSequence(0));
        Assert.Equal(0, ring.FindSequence(999));
        Assert.Equal(1, ring.FindSequence(1000));
        Assert.Equal(2, ring.FindSequence(2500));
        Assert.Equal(4, ring.FindSequence(4999));
        Assert.Equal(5, ring.FindSequence(5000));       // where the stream stands: the next frame
        Assert.Null(ring.FindSequence(5001));           // not yet sent
        PublishEnd(ring, 5000);
        Assert.True(ring.IsComplete);
        Assert.Equal(5, ring.FindSequence(5000));       // a child resuming at the end still gets the End frame
        Assert.Equal(4, ring.FindSequence(4000));
    }

    [Fact]
    public void FindSequenceForgetsFramesNoLongerRetained()
    {
        // 4 slots, no retention: after 6 frames of 1000 bytes, frames 2..5 are held.
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        PublishData(ring, 6, 1000);
        Assert.Null(ring.FindSequence(0));
        Assert.Null(ring.FindSequence(1999));
        Assert.Equal(2, ring.FindSequence(2000));
        Assert.Equal(5, ring.FindSequence(5999));
        Assert.Equal(6, ring.FindSequence(6000));
    }

    [Fact]
    public void ARingStartedAtAResumeOffsetFindsOnlyWhatItHolds()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize, retainBytes: 4 * RelayRing.SlotSize);
        PublishData(ring, 2, 1000, start: 7000);
        Assert.Null(ring.FindSequence(6999));
        Assert.Equal(0, ring.FindSequence(7000));
        Assert.Equal(1, ring.FindSequence(8999));
    }

    [Fact]
    public async Task AfterTheEndOrAFaultNothingMoreIsAcquired()
    {
        using var done = new RelayRing(4 * RelayRing.SlotSize);
        PublishEnd(done, 0);
        await Assert.ThrowsAsync<InvalidOperationException>(() => done.AcquireAsync(default).AsTask());

        using var failed = new RelayRing(4 * RelayRing.SlotSize);
        failed.Fault(new IOException("first"));
        failed.Fault(new IOException("second")); // the first error is the one reported
        var e = await Assert.ThrowsAsync<KaDeployException>(() => failed.AcquireAsync(default).AsTask());
        Assert.Equal("relay buffer failed: first", e.Message);
    }

    [Fact]
    public async Task AFaultReachesAConsumerOnlyAfterTheFramesPublishedBeforeIt()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        using var c = ring.Attach("c");
        PublishData(ring, 2, 100);
        ring.Fault(new IOException("reset"));
        Assert.Equal(0, (await c.NextAsync(default)).Header.Offset);
        c.Advance();
        Assert.Equal(100, (await c.NextAsync(default)).Header.Offset);
        c.Advance();
        Assert.Equal("upstream failed: reset", (await Assert.ThrowsAsync<KaDeployException>(() => c.NextAsync(default).AsTask())).Message);
    }

    [Fact]
    public async Task AnEvictedConsumerIsToldWhyAndNoLongerHoldsTheProducer()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        using var stuck = ring.Attach("stuck");
        PublishData(ring, 4, 100);
        ValueTask<Memory<byte>> next = ring.AcquireAsync(default);
        Assert.False(next.IsCompleted);
        stuck.Evict("too slow");
        stuck.Evict("again"); // the first reason stays
        await next.AsTask().WaitAsync(Deadline);
        Assert.Equal("too slow", await stuck.Evicted);
        Assert.Equal("too slow", stuck.EvictedReason);
        Assert.Equal("too slow", (await Assert.ThrowsAsync<KaDeployException>(() => stuck.NextAsync(default).AsTask())).Message);
    }

    [Fact]
    public async Task AFrameReadFromTheRingIsTheOnePublished()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        using var c = ring.Attach("c");
        Memory<byte> slot = await ring.AcquireAsync(default);
        byte[] frame = WireFrames.Data([1, 2, 3], 0);
        frame.CopyTo(slot);
        ring.Publish(DataFrameHeader.Read(frame), frame.Length);
        RingFrame f = await c.NextAsync(default);
        Assert.Equal(frame, f.Bytes.ToArray());
        Assert.Equal([1, 2, 3], f.Payload.ToArray());
        Assert.Equal(0, f.Sequence);
        Assert.Equal(0, c.Position);
        c.Advance();
        Assert.Equal(1, c.Position);
    }

    // ---- the receiver's other paths ----

    [Fact]
    public async Task AnAbortFrameFailsTheReceiverNamingThePeerAndTheReason()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        using var c = ring.Attach("c");
        byte[] wire = WireFrames.Concat([WireFrames.Data([9, 9], 0), WireFrames.Frame(DataFrameType.Abort, "disk full"u8, 2, DataFrameHeader.ComputeChecksum("disk full"u8, 2))]);
        var receiver = new FrameReceiver(new MemoryStream(wire), ring) { Peer = "parent node 3" };
        var e = await Assert.ThrowsAsync<KaDeployException>(() => receiver.RunAsync(default));
        Assert.Equal("parent node 3 aborted: disk full", e.Message);
        Assert.Equal(1, ring.Published);
        Assert.Equal(2, receiver.WireBytes);
    }

    [Fact]
    public async Task ALostLinkIsNamedAndFaultsTheRingUnlessTheNodeCanBeReattached()
    {
        foreach (bool fault in new[] { true, false })
        {
            using var ring = new RelayRing(4 * RelayRing.SlotSize);
            using var c = ring.Attach("c");
            var receiver = new FrameReceiver(new ResetAfter(WireFrames.Data([1, 2, 3], 0)), ring, faultRingOnError: fault) { Peer = "the server" };
            var e = await Assert.ThrowsAsync<KaDeployException>(() => receiver.RunAsync(default));
            Assert.Equal("link to the server lost: connection reset", e.Message);
            Assert.IsType<IOException>(e.InnerException);
            await c.NextAsync(default);
            c.Advance();
            ValueTask<RingFrame> next = c.NextAsync(default);
            // A node that can be re-attached keeps its consumers waiting for the frames a new parent brings.
            Assert.Equal(fault, next.IsCompleted);
            if (fault) Assert.Contains("connection reset", (await Assert.ThrowsAsync<KaDeployException>(() => next.AsTask())).Message);
            else
            {
                ring.Fault(new IOException("test over")); // releases the waiting read
                await Assert.ThrowsAsync<KaDeployException>(() => next.AsTask().WaitAsync(Deadline));
            }
        }
    }

    [Fact]
    public async Task AClosedLinkIsReportedWhereItClosed()
    {
        byte[] frame = WireFrames.Data(new byte[100], 0);
        async Task<string> Cut(int at)
        {
            using var ring = new RelayRing(4 * RelayRing.SlotSize);
            var receiver = new FrameReceiver(new MemoryStream(frame[..at]), ring) { Peer = "parent" };
            return (await Assert.ThrowsAsync<ProtocolException>(() => receiver.RunAsync(default))).Message;
        }
        Assert.Equal("parent closed the link in a frame header (after 0 bytes)", await Cut(0));
        Assert.Equal("parent closed the link in a frame header (after 0 bytes)", await Cut(DataFrameHeader.Size - 1));
        Assert.Equal("parent closed the link in a 100-byte frame at offset 0", await Cut(DataFrameHeader.Size + 99));
    }

    [Fact]
    public async Task AResumedLinkStartsAtItsOffsetAndRefusesAnyOther()
    {
        byte[] data = RandomNumberGenerator.GetBytes(300);
        var frames = new List<byte[]> { WireFrames.Data(data.AsSpan(200, 100), 200), WireFrames.End(300, 300, SHA256.HashData(data)) };
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var receiver = new FrameReceiver(new MemoryStream(WireFrames.Concat(frames)), ring, startOffset: 200);
        Assert.Equal(200, receiver.WireBytes);
        EndOfStream end = await receiver.RunAsync(default);
        Assert.Equal(300, receiver.WireBytes);
        Assert.Equal(SHA256.HashData(data), end.Digest);
        Assert.Equal((300L, 300L, DigestAlgorithm.Sha256), (end.WireLength, end.PayloadLength, end.Algorithm));

        using var ring2 = new RelayRing(4 * RelayRing.SlotSize);
        var wrong = new FrameReceiver(new MemoryStream(WireFrames.Concat(frames)), ring2, startOffset: 100);
        Assert.Equal("frame at offset 200, expected 100", (await Assert.ThrowsAsync<ProtocolException>(() => wrong.RunAsync(default))).Message);
        Assert.Equal(0, ring2.Published);
    }

    [Fact]
    public async Task ASealedFrameIsRefusedByANodeWithoutAStreamKey()
    {
        byte[] frame = new byte[DataFrameHeader.Size + 40];
        new DataFrameHeader(DataFrameType.Data, 40, 0, 0, DataFrameFlags.Sealed).Write(frame);
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var e = await Assert.ThrowsAsync<ProtocolException>(() => new FrameReceiver(new MemoryStream(frame), ring).RunAsync(default));
        Assert.Equal("sealed frame at offset 0, but this node has no stream key (keyed server, unkeyed node)", e.Message);
        Assert.Equal(0, ring.Published);
    }

    [Fact]
    public void AnEndFrameNamingAnUnknownDigestIsRefused()
    {
        var body = new byte[DataFrameHeader.EndPayloadSize];
        new EndOfStream(1, 2, DigestAlgorithm.Blake3, new byte[PayloadDigest.Size]).Write(body);
        Assert.Equal(DigestAlgorithm.Blake3, EndOfStream.Parse(body).Algorithm);
        body[16] = 9;
        Assert.Equal("End frame names unknown digest algorithm 9", Assert.Throws<ProtocolException>(() => EndOfStream.Parse(body)).Message);
    }

    /// <summary>Yields its bytes, then fails the next read as a reset socket does.</summary>
    private sealed class ResetAfter(byte[] bytes) : KaDeploy.IO.SequentialReadStream
    {
        private int _pos;
        public override int Read(Span<byte> buffer)
        {
            if (_pos == bytes.Length) throw new IOException("connection reset");
            int n = Math.Min(buffer.Length, bytes.Length - _pos);
            bytes.AsSpan(_pos, n).CopyTo(buffer);
            _pos += n;
            return n;
        }
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            try { return ValueTask.FromResult(Read(buffer.Span)); }
            catch (IOException e) { return ValueTask.FromException<int>(e); }
        }
    }
}
