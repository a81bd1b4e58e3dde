using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using KaDeploy.Protocol;
using KaDeploy.Relay;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// The ring's memory (issue 10): one anonymous mapping per ring, huge pages where the kernel gives them, segments lent
/// as <see cref="Memory{T}"/> over it. Every slot has bytes of its own across segment boundaries and wraps, in each kind
/// of memory; the memory stays mapped and unchanged as long as anything can still read it, and is given back when the
/// ring is disposed with nobody left.
/// </summary>
public class RingMemoryTests
{
    private static RingMemoryKind Kind(string name) => name switch
    {
        "huge pages" => RingMemoryKind.HugePages,
        "mapped" => RingMemoryKind.Mapped,
        _ => RingMemoryKind.Pinned,
    };

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
    [InlineData("huge pages", false)]
    [InlineData("huge pages", true)]
    [InlineData("mapped", false)]
    [InlineData("mapped", true)]
    [InlineData("pinned", false)]
    [InlineData("pinned", true)]
    public async Task EverySlotKeepsItsOwnBytesAcrossSegmentsAndWraps(string memory, bool sealedFrames)
    {
        var kind = Kind(memory);
        // 4 window + 36 retained = 40 slots: segments of 16, 16 and 8 slots, the last one shorter.
        int slotBytes = RelayRing.SlotSize + (sealedFrames ? RelayRing.PlaintextSize : 0);
        using var ring = new RelayRing(4L * slotBytes, 36L * slotBytes, sealedFrames, kind);
        Assert.Equal(40, ring.SlotCount);
        Assert.Equal(kind != RingMemoryKind.Pinned && OperatingSystem.IsLinux(), ring.Mapping is not null);
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
    private static async Task<RingFrame> AFrameOfADroppedRingAsync(RingMemoryKind kind)
    {
        var ring = new RelayRing(4L * RelayRing.SlotSize, 12L * RelayRing.SlotSize, false, kind);
        await PublishFullSlotsAsync(ring, 0, 16);
        var cursor = ring.Attach("late sender", 5);
        var frame = await cursor.NextAsync(default);
        ring.Dispose(); // with the late sender still attached
        return frame;
    }

    // The mapping (start, end) in /proc/self/maps that holds `address`, or null.
    private static (long Start, long End)? MappedRange(nint address)
    {
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            var range = line.AsSpan(0, line.IndexOf(' '));
            int dash = range.IndexOf('-');
            long start = long.Parse(range[..dash], NumberStyles.HexNumber), end = long.Parse(range[(dash + 1)..], NumberStyles.HexNumber);
            if (address >= start && address < end) return (start, end);
        }
        return null;
    }

    [Theory]
    [InlineData("huge pages")]
    [InlineData("pinned")]
    public async Task AFrameStaysMappedAndUnchangedWhileAnythingHoldsItEvenAfterItsRingIsDisposedAndCollected(string memory)
    {
        var frame = await AFrameOfADroppedRingAsync(Kind(memory));
        for (int i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        Assert.True(MemoryMarshal.TryGetMemoryManager<byte, RingSegment>(MemoryMarshal.AsMemory(frame.Bytes), out var segment, out int start, out _));
        // Looked up before the bytes are read: memory unmapped under a frame would crash the test, not fail it.
        Assert.NotNull(MappedRange(segment.Address + start));
        Assert.Equal(5, frame.Sequence);
        AssertPattern(frame.Bytes.Span, 5, 0);
    }

    // Resident KiB of the mapping that holds `address` (/proc/self/smaps), and of it in huge pages.
    private static (long Rss, long AnonHuge) Resident(nint address)
    {
        var range = MappedRange(address) ?? throw new InvalidOperationException("not mapped");
        string head = $"{range.Start:x}-{range.End:x} ";
        long rss = -1, huge = -1;
        bool inside = false;
        foreach (var line in File.ReadLines("/proc/self/smaps"))
        {
            // A mapping's own line starts with its range; its fields start with "Name:".
            if (!line.AsSpan(0, Math.Max(0, line.IndexOf(' '))).EndsWith(":"))
                inside = line.StartsWith(head, StringComparison.Ordinal);
            else if (inside && line.StartsWith("Rss:", StringComparison.Ordinal)) rss = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
            else if (inside && line.StartsWith("AnonHugePages:", StringComparison.Ordinal)) huge = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
        }
        return (rss, huge);
    }

    [Fact]
    public async Task ADisposedRingWithNobodyLeftGivesItsMemoryBackAtOnce()
    {
        // 64 slots (4 MiB and more): two whole 2 MiB pages at least, whatever the kernel gives.
        var ring = new RelayRing(4L * RelayRing.SlotSize, 60L * RelayRing.SlotSize, false, RingMemoryKind.HugePages);
        await PublishFullSlotsAsync(ring, 0, 64);
        using (var reader = ring.Attach("reader", 10)) Assert.Equal(10, (await reader.NextAsync(default)).Sequence);
        nint start = ring.Mapping!.Start;
        var (before, _) = Resident(start);
        Assert.True(before >= 64L * RelayRing.SlotSize / 1024, $"{before} KiB resident before");
        ring.Dispose();
        Assert.True(ring.Mapping.Released);
        Assert.Equal(0, Resident(start).Rss);
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await ring.AcquireAsync(default));
        Assert.Throws<ObjectDisposedException>(() => ring.Attach("late", 63));
    }

    [Fact]
    public async Task ADisposedRingThatALateProducerStillWritesIntoKeepsItsMemory()
    {
        var ring = new RelayRing(4L * RelayRing.SlotSize, 0, false, RingMemoryKind.HugePages);
        await PublishFullSlotsAsync(ring, 0, 2);
        Memory<byte> lent = await ring.AcquireAsync(default); // a receiver in the middle of a frame
        ring.Dispose();
        Assert.False(ring.Mapping is { Released: true });
        Fill(lent.Span, 2, 0);
        AssertPattern(lent.Span, 2, 0);
    }
}
