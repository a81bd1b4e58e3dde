using System.Buffers.Binary;
using System.IO.Hashing;
using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// The frames digest (the default end-to-end check): its record of each frame, the order it insists on, and the
/// sink's refusal of a slot that no longer holds the frame the ring says it does.
/// </summary>
public class FrameDigestTests
{
    [Fact]
    public void EachDataFrameIsFoldedAsOffsetLengthFlagsAndItsCheck()
    {
        byte[] a = RandomNumberGenerator.GetBytes(65536), b = RandomNumberGenerator.GetBytes(1000);
        var digest = new FrameDigest();
        digest.Append(DataFrameHeader.Read(WireFrames.Data(a, 0)), a);
        digest.Append(DataFrameHeader.Read(WireFrames.Data(b, 65536)), b);

        var expected = new XxHash128();
        foreach (var (offset, payload) in new[] { (0L, a), (65536L, b) })
        {
            var record = new byte[FrameDigest.RecordSize];
            BinaryPrimitives.WriteInt64LittleEndian(record, offset);
            BinaryPrimitives.WriteInt32LittleEndian(record.AsSpan(8), payload.Length);
            BinaryPrimitives.WriteUInt64LittleEndian(record.AsSpan(16), XxHash3.HashToUInt64(payload, offset));
            expected.Append(record);
        }
        byte[] sum = digest.Finish();
        Assert.Equal(expected.GetCurrentHash(), sum[..16]);
        Assert.Equal(new byte[16], sum[16..]);
        Assert.Equal(2, digest.Frames);
        Assert.Equal(66536, digest.NextOffset);
    }

    [Fact]
    public void ASealedFrameIsFoldedWithTheFirstBytesOfItsTag()
    {
        byte[] wire = RandomNumberGenerator.GetBytes(100 + DataFrameHeader.TagSize); // ciphertext || tag: only the tag is read
        var header = new DataFrameHeader(DataFrameType.Data, wire.Length, 0, 0, DataFrameFlags.Sealed);
        var record = new byte[FrameDigest.RecordSize];
        FrameDigest.Record(header, wire, record);
        Assert.Equal(wire.AsSpan(100, 8).ToArray(), record[16..]);
        Assert.Equal((uint)DataFrameFlags.Sealed, BinaryPrimitives.ReadUInt32LittleEndian(record.AsSpan(12)));

        // Another tag, another record: a frame sealed differently does not pass for this one.
        var other = (byte[])wire.Clone();
        other[100] ^= 1;
        var otherRecord = new byte[FrameDigest.RecordSize];
        FrameDigest.Record(header, other, otherRecord);
        Assert.NotEqual(record, otherRecord);
    }

    [Fact]
    public void AFrameOutOfPlaceOrTwiceIsRefused()
    {
        byte[] a = RandomNumberGenerator.GetBytes(100);
        var digest = new FrameDigest();
        var skipped = Assert.Throws<KaDeployException>(() => digest.Append(DataFrameHeader.Read(WireFrames.Data(a, 100)), a));
        Assert.Contains("expected 0", skipped.Message);
        digest.Append(DataFrameHeader.Read(WireFrames.Data(a, 0)), a);
        var twice = Assert.Throws<KaDeployException>(() => digest.Append(DataFrameHeader.Read(WireFrames.Data(a, 0)), a));
        Assert.Contains("expected 100", twice.Message);
    }

    [Fact]
    public void TheSameFramesInAnotherOrderOrOneFewerGiveAnotherDigest()
    {
        var frames = WireFrames.Stream(RandomNumberGenerator.GetBytes(200_000), 65536);
        byte[] whole = WireFrames.FramesDigest(frames);
        // A frame's check changed (its payload was another one of the same length) changes the digest.
        var changed = frames.Select(f => (byte[])f.Clone()).ToList();
        changed[1][20] ^= 1; // the check field
        Assert.NotEqual(whole, WireFrames.FramesDigest(changed));
        // One frame fewer at the end changes it too (the offsets make a hole elsewhere unfoldable).
        Assert.NotEqual(whole, WireFrames.FramesDigest(frames.Take(frames.Count - 2)));
    }

    [Fact]
    public async Task TheSinkRefusesASlotThatHoldsAnotherFrame()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        using var ring = new RelayRing(1 << 20);
        using var reader = new RingReaderStream(ring.Attach("sink")) { Frames = new FrameDigest() };
        byte[] payload = RandomNumberGenerator.GetBytes(1000);
        var slot = await ring.AcquireAsync(cts.Token);
        byte[] frame = WireFrames.Data(payload, 0);
        frame.CopyTo(slot.Span);
        ring.Publish(DataFrameHeader.Read(frame), frame.Length);
        // What a ring bug would do: the slot is written again (header first, as a receive does) while the sink has not taken it.
        WireFrames.Data(payload, 65536).AsSpan(0, DataFrameHeader.Size).CopyTo(slot.Span);

        var e = await Assert.ThrowsAsync<KaDeployException>(async () => _ = await reader.ReadAsync(new byte[4096], cts.Token));
        Assert.Contains("holds another frame", e.Message);
    }

    [Fact]
    public async Task TheSinkFoldsEveryFrameItTakesAndTheDigestIsTheServers()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        using var ring = new RelayRing(1 << 20);
        var frames = WireFrames.Stream(RandomNumberGenerator.GetBytes(300_000), 65536);
        var digest = new FrameDigest();
        using var reader = new RingReaderStream(ring.Attach("sink")) { Frames = digest };
        var reading = Task.Run(async () =>
        {
            var buffer = new byte[10_000]; // smaller than a frame: a frame is folded once however it is read
            while (await reader.ReadAsync(buffer, cts.Token) > 0) { }
        }, cts.Token);
        foreach (var f in frames) await WireFrames.PublishAsync(ring, f, cts.Token);
        await reading;
        Assert.Equal(WireFrames.FramesDigest(frames), digest.Finish());
        Assert.Equal(5, digest.Frames);
    }
}
