using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using KaDeploy.Protocol;
using KaDeploy.Relay;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// The ring's memory (issue 10): segments of <see cref="RelayRing.SegmentSlots"/> slots, a sealed ring's plaintext areas
/// after its wire slots. Every slot (and plaintext area) has bytes of its own across segment boundaries and wraps, and a
/// frame a consumer still holds stays unchanged when its ring is disposed and dropped (a child sender that still sends
/// when its node's session returns). Written for h10f's ring in one anonymous mapping (branch h10f, 1ba9f75: not kept),
/// whose memory a wrong Dispose could give back under a reader.
/// </summary>
public class RingMemoryTests
{
    // A byte pattern of its own for every (sequence, area): a slot that shares bytes with another one shows the other's.
    private static byte PatternByte(long sequence, int area, int i) => (byte)(sequence * 31 + area * 101 + i * 7 + (i >> 9));

    private static void Fill(Span<byte> target, long sequence, int area)
    {
        for (int i = 0; i < target.Length; i++) target[i] = PatternByte(sequence, area, i);
    }

    private static void AssertPattern(ReadOnlySpan<byte> actual, long sequence, int area)
    {
        for (int i = 0; i < actual.Length; i++)
            if (actual[i] != PatternByte(sequence, area, i))
                Assert.Fail($"frame {sequence}, area {area}: byte {i} is {actual[i]}, expected {PatternByte(sequence, area, i)}");
    }

    // Fills `count` whole slots from the ring's next sequence (and, sealed, their plaintext areas) and publishes them.
    private static async Task PublishFullSlotsAsync(RelayRing ring, long from, int count)
    {
        for (long s = from; s < from + count; s++)
        {
            Memory<byte> slot = await ring.AcquireAsync(default);
            Fill(slot.Span, s, 0);
            if (ring.IsSealed) Fill(ring.PlaintextOf(slot).Span, s, 1);
            ring.Publish(new DataFrameHeader(DataFrameType.Data, ProtocolConstants.MaxChunkPayload, s * ProtocolConstants.MaxChunkPayload, 0), RelayRing.SlotSize);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task EverySlotKeepsItsOwnBytesAcrossSegmentsAndWraps(bool sealedFrames)
    {
        // 4 window + 36 retained = 40 slots: segments of 16, 16 and 8 slots, the last one shorter.
        int slotBytes = RelayRing.SlotSize + (sealedFrames ? RelayRing.PlaintextSize : 0);
        using var ring = new RelayRing(4L * slotBytes, 36L * slotBytes, sealedFrames);
        Assert.Equal(40, ring.SlotCount);
        for (int lap = 0; lap < 3; lap++)
        {
            long from = lap * 40L;
            await PublishFullSlotsAsync(ring, from, 40);
            // Every slot of the ring, written after all the others: none of them wrote into another's bytes.
            using var cursor = ring.Attach("check", from);
            for (long s = from; s < from + 40; s++)
            {
                var frame = await cursor.NextAsync(default);
                Assert.Equal(s, frame.Sequence);
                AssertPattern(frame.Bytes.Span, s, 0);
                if (sealedFrames) AssertPattern(ring.PlaintextOf(MemoryMarshal.AsMemory(frame.Bytes)).Span, s, 1);
                cursor.Advance();
            }
            // Runs are what one send forwards: whole frames, back to back, never across the end of a segment.
            using var runs = ring.Attach("runs", from);
            for (long s = from; s < from + 40;)
            {
                var run = await runs.NextRunAsync(int.MaxValue, default);
                Assert.Equal(s, run.First.Offset / ProtocolConstants.MaxChunkPayload);
                Assert.Equal(run.Frames * RelayRing.SlotSize, run.Bytes.Length);
                Assert.True((s % 40) / RelayRing.SegmentSlots == ((s + run.Frames - 1) % 40) / RelayRing.SegmentSlots, "a run crossed a segment");
                for (int f = 0; f < run.Frames; f++)
                    AssertPattern(run.Bytes.Span.Slice(f * RelayRing.SlotSize, RelayRing.SlotSize), s + f, 0);
                runs.Advance(run.Frames);
                s += run.Frames;
            }
        }
    }

    // A ring whose owner is gone (disposed, then dropped) while a consumer still holds a frame of it: a child sender
    // that is still sending when its node's session returns, say. Not inlined: no local of this method keeps the ring.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static async Task<RingFrame> AFrameOfADroppedRingAsync()
    {
        var ring = new RelayRing(4L * RelayRing.SlotSize, 12L * RelayRing.SlotSize);
        await PublishFullSlotsAsync(ring, 0, 16);
        var cursor = ring.Attach("late sender", 5);
        var frame = await cursor.NextAsync(default);
        ring.Dispose(); // with the late sender still attached
        return frame;
    }

    [Fact]
    public async Task AFrameStaysUnchangedWhileAnythingHoldsItEvenAfterItsRingIsDisposedAndCollected()
    {
        var frame = await AFrameOfADroppedRingAsync();
        for (int i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        Assert.Equal(5, frame.Sequence);
        AssertPattern(frame.Bytes.Span, 5, 0);
    }
}
