using System.Runtime.InteropServices;
using System.Security.Cryptography;
using KaDeploy.IO;
using KaDeploy.Payloads.Block;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Payloads.Block;

/// <summary>
/// A block map read from lent frames (a relayed ring): the reader parses record headers out of the loans and the
/// sink writes run data from them in place. The frames cut the map at awkward places: inside a record header,
/// right after a run's end with the next header in the same frame, one byte at a time, and runs longer than a frame.
/// </summary>
public class BlockMapLentFramesTests
{
    private const int MiB = 1024 * 1024;
    private const int MaxFrame = KaDeploy.Protocol.ProtocolConstants.MaxChunkPayload;

    /// <summary>An image with runs of data between zero gaps, its block map, and where each record starts in the map.</summary>
    private sealed record Map(byte[] Image, byte[] Bytes, List<int> RecordStarts, long DataBytes);

    // 512-byte blocks so that runs can end anywhere a sector ends: a 3 MiB run (many frames long), runs of a few
    // sectors that end mid-frame, two runs back to back, and a last run that ends at an unaligned total length.
    private static async Task<Map> MakeMapAsync(bool small = false)
    {
        int total = small ? 16 * 1024 + 300 : 6 * MiB + 300;
        (int Offset, int Length)[] runs = small
            ? [(0, 512), (1024, 1536), (2560, 512), (8192, 4096), (16 * 1024, 300)]
            : [(0, 3 * MiB + 512), (3 * MiB + 4096, 512), (3 * MiB + 8192, 1536), (3 * MiB + 9728, 70_144),
               (4 * MiB, 12_800), (5 * MiB, MiB - 4096), (6 * MiB, 300)];
        byte[] image = new byte[total];
        var random = new Random(total);
        var stream = new MemoryStream();
        var writer = new BlockMapWriter(stream, total, 512);
        var starts = new List<int>();
        await writer.WriteHeaderAsync(CancellationToken.None);
        foreach (var (offset, length) in runs)
        {
            random.NextBytes(image.AsSpan(offset, length));
            starts.Add((int)stream.Length);
            await writer.WriteRunAsync(offset, image.AsMemory(offset, length), CancellationToken.None);
        }
        starts.Add((int)stream.Length); // the END record
        await writer.WriteEndAsync(CancellationToken.None);
        return new Map(image, stream.ToArray(), starts, writer.DataBytes);
    }

    /// <summary>Frame lengths that cut <paramref name="map"/> as <paramref name="plan"/> says; none longer than a frame may be.</summary>
    private static List<int> Cut(Map map, string plan)
    {
        var cuts = new SortedSet<int>();
        int length = map.Bytes.Length;
        switch (plan)
        {
            case "frames of 64 KiB":
                break; // only the frame limit below: runs end mid-frame, the next header in the same frame
            case "each header split":
                // A boundary 1..16 bytes into every record header, the END record's and the map's header included.
                cuts.Add(7);
                for (int i = 0; i < map.RecordStarts.Count; i++) cuts.Add(map.RecordStarts[i] + 1 + i % 16);
                break;
            case "split right after each header":
                // A frame ends exactly where a run's data starts, the next one exactly where it ends.
                foreach (int s in map.RecordStarts) { cuts.Add(s); cuts.Add(s + 13); }
                break;
            case "random":
                var random = new Random(91);
                for (int at = 0; at < length; at += random.Next(1, random.Next(2) == 0 ? 40 : MaxFrame)) cuts.Add(at);
                break;
            case "one byte each":
                for (int at = 1; at < length; at++) cuts.Add(at);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(plan), plan, null);
        }
        for (int at = MaxFrame; at < length; at += MaxFrame) cuts.Add(at);
        var frames = new List<int>();
        int previous = 0;
        foreach (int c in cuts.Where(c => c > 0 && c < length).Concat([length]))
        {
            if (c - previous > MaxFrame)
            {
                // A boundary from the plan moved the 64 KiB grid: keep every frame within the limit.
                for (; c - previous > MaxFrame; previous += MaxFrame) frames.Add(MaxFrame);
            }
            frames.Add(c - previous);
            previous = c;
        }
        Assert.Equal(length, frames.Sum());
        Assert.All(frames, f => Assert.InRange(f, 1, MaxFrame));
        return frames;
    }

    /// <summary>
    /// Publishes <paramref name="bytes"/> into a real ring as Data frames of the given lengths, then an End frame,
    /// while <paramref name="consume"/> takes them as a node's local sink does (a digest stream over the ring's reader).
    /// Returns the SHA-256 of what the consumer's stream passed on, drained to the End frame as the node does.
    /// </summary>
    private static async Task<byte[]> ThroughRingAsync(byte[] bytes, IReadOnlyList<int> frames, Func<Stream, CancellationToken, Task> consume)
    {
        using var cts = PayloadTestKit.SafetyTimeout(120);
        using var ring = new RelayRing(1 << 20);
        using var reader = new RingReaderStream(ring.Attach("sink"));
        using var digest = new DigestReadStream(reader, KaDeploy.Protocol.DigestAlgorithm.Sha256);
        using var stopProducer = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
        Task produce = Task.Run(async () =>
        {
            int at = 0;
            foreach (int n in frames)
            {
                await WireFrames.PublishAsync(ring, WireFrames.Data(bytes.AsSpan(at, n), at), stopProducer.Token);
                at += n;
            }
            await WireFrames.PublishAsync(ring, WireFrames.End(at, at, SHA256.HashData(bytes)), stopProducer.Token);
        }, stopProducer.Token);
        try
        {
            await consume(digest, cts.Token);
            await digest.DrainAsync(cts.Token);
            await produce;
            return digest.Digest();
        }
        finally
        {
            // A consumer that failed leaves the producer waiting for a slot: stop it.
            await stopProducer.CancelAsync();
            try { await produce; }
            catch (OperationCanceledException) { }
        }
    }

    public static TheoryData<string> Plans => new() { "frames of 64 KiB", "each header split", "split right after each header", "random" };

    [Theory]
    [MemberData(nameof(Plans))]
    public async Task TheTargetFileEqualsTheImageHoweverTheFramesCutTheMap(string plan)
    {
        Map map = await MakeMapAsync();
        using var dir = new TempDirectory();
        var sink = new BlockDeviceSink(dir.File("target.img"));
        byte[] passed = await ThroughRingAsync(map.Bytes, Cut(map, plan), sink.ConsumeAsync);

        Assert.Equal(map.Image, File.ReadAllBytes(dir.File("target.img")));
        Assert.Equal(map.DataBytes, sink.DataBytesWritten);
        Assert.Equal(SHA256.HashData(map.Bytes), passed); // every byte of the map went through the digest, once
    }

    [Fact]
    public async Task OneByteFramesStillGiveTheImage()
    {
        Map map = await MakeMapAsync(small: true);
        using var dir = new TempDirectory();
        var sink = new BlockDeviceSink(dir.File("target.img"));
        await ThroughRingAsync(map.Bytes, Cut(map, "one byte each"), sink.ConsumeAsync);
        Assert.Equal(map.Image, File.ReadAllBytes(dir.File("target.img")));
    }

    [Theory]
    [InlineData("each header split")]
    [InlineData("random")]
    [InlineData("one byte each")]
    public async Task TheReaderHandsOutRunDataAsSlicesOfTheLoansOnly(string plan)
    {
        // A lender that scribbles over each segment once its loan ends, as a ring reusing the slot would: a reader
        // that kept a reference past the loan (for a header cut in two, or a run's next bytes) reads garbage.
        Map map = await MakeMapAsync(small: plan == "one byte each");
        var lender = new ScribblingLender(map.Bytes, Cut(map, plan));
        var reader = new BlockMapReader(lender);
        Assert.True(reader.LendsRunData);
        var header = await reader.ReadHeaderAsync(CancellationToken.None);
        byte[] rebuilt = new byte[header.TotalLength];
        int runs = 0;
        while (await reader.ReadNextRunAsync(CancellationToken.None) is BlockMapRun run)
        {
            runs++;
            long offset = run.Offset;
            while (reader.RunRemaining > 0)
            {
                int before = reader.RunRemaining;
                ReadOnlyMemory<byte> piece = await reader.ReadRunSegmentAsync(CancellationToken.None);
                Assert.InRange(piece.Length, 1, before);
                Assert.Equal(before - piece.Length, reader.RunRemaining);
                // Lent, not copied: the piece lies in the array the lender lent last.
                Assert.True(MemoryMarshal.TryGetArray(piece, out ArraySegment<byte> lent));
                Assert.Same(lender.Current, lent.Array);
                piece.Span.CopyTo(rebuilt.AsSpan((int)offset));
                offset += piece.Length;
            }
            Assert.Equal(run.End, offset);
        }
        Assert.Equal(map.RecordStarts.Count - 1, runs);
        Assert.Equal(map.Image, rebuilt);
        Assert.Equal(map.DataBytes, reader.DataBytes);
        Assert.Null(await reader.ReadNextRunAsync(CancellationToken.None)); // nothing after END
        Assert.Equal(0, lender.ReadCalls); // never a copying read
    }

    [Fact]
    public async Task ReadRunDataCopiesOutOfTheLoansForABlockDevicesBuffers()
    {
        // The block device's path reads run data into its own aligned buffers, in pieces that do not match the frames.
        Map map = await MakeMapAsync();
        var lender = new ScribblingLender(map.Bytes, Cut(map, "random"));
        var reader = new BlockMapReader(lender);
        var header = await reader.ReadHeaderAsync(CancellationToken.None);
        byte[] rebuilt = new byte[header.TotalLength];
        while (await reader.ReadNextRunAsync(CancellationToken.None) is BlockMapRun run)
        {
            long offset = run.Offset;
            while (reader.RunRemaining > 0)
            {
                int n = Math.Min(reader.RunRemaining, 100_000);
                await reader.ReadRunDataAsync(rebuilt.AsMemory((int)offset, n), CancellationToken.None);
                offset += n;
            }
        }
        Assert.Equal(map.Image, rebuilt);
        Assert.Equal(0, lender.ReadCalls);
    }

    [Fact]
    public async Task BytesAfterTheEndRecordInTheSameFrameAreNeitherParsedNorWritten()
    {
        // As from a stream, where they stay unread: the node's digest and length checks count them, the sink does not.
        Map map = await MakeMapAsync(small: true);
        byte[] followed = [.. map.Bytes, .. Enumerable.Repeat((byte)'D', 40)];
        using var dir = new TempDirectory();
        var sink = new BlockDeviceSink(dir.File("target.img"));
        byte[] passed = await ThroughRingAsync(followed, [followed.Length], sink.ConsumeAsync);
        Assert.Equal(map.Image, File.ReadAllBytes(dir.File("target.img")));
        Assert.Equal(SHA256.HashData(followed), passed);
    }

    public static TheoryData<string, string, string> Corruptions => new()
    {
        { "cut inside a record header", "each header split", "stream ends inside the record" },
        { "cut inside a run", "random", "stream ends inside the record that ends at" },
        { "cut inside the END record", "one byte each", "stream ends inside the end record" },
        { "no END record", "each header split", "stream ends inside the record (truncated" },
        { "END counts other data bytes", "each header split", "data bytes, the stream carried" },
        { "runs out of order", "split right after each header", "overlaps or precedes" },
        { "run beyond the total", "each header split", "lies beyond the image's end" },
    };

    [Theory]
    [MemberData(nameof(Corruptions))]
    public async Task ACorruptOrTruncatedMapFailsWithAReason(string damage, string plan, string expected)
    {
        Map map = await MakeMapAsync(small: true);
        byte[] bytes = (byte[])map.Bytes.Clone();
        int second = map.RecordStarts[1], end = map.RecordStarts[^1];
        bytes = damage switch
        {
            "cut inside a record header" => bytes[..(second + 6)],
            "cut inside a run" => bytes[..(second + 13 + 700)],
            "cut inside the END record" => bytes[..(end + 9)],
            "no END record" => bytes[..end],
            "END counts other data bytes" => Poke(bytes, end + 9, 1),
            "runs out of order" => Poke(bytes, second + 2, 0), // the second run (at 1024) at offset 0, inside the first
            "run beyond the total" => Poke(bytes, second + 1 + 3, 0x40), // its offset plus 1 GiB
            _ => throw new ArgumentOutOfRangeException(nameof(damage)),
        };
        var cut = new Map(map.Image, bytes, [.. map.RecordStarts.Where(s => s < bytes.Length)], map.DataBytes);

        using var dir = new TempDirectory();
        var e = await Assert.ThrowsAsync<KaDeployException>(() =>
            ThroughRingAsync(bytes, Cut(cut, plan), new BlockDeviceSink(dir.File("target.img")).ConsumeAsync));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.True(new FileInfo(dir.File("target.img")).Length <= map.Image.Length);
    }

    private static byte[] Poke(byte[] bytes, int at, byte value)
    {
        bytes[at] = value;
        return bytes;
    }

    [SkippableFact]
    public async Task ABlockDeviceFromLentFramesGetsTheImageAndZeroedGaps()
    {
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        Map map = await MakeMapAsync();
        using var dir = new TempDirectory();
        byte[] garbage = new byte[map.Image.Length + 4096];
        Array.Fill(garbage, (byte)0xA5); // the gaps must be zeroed, not left as they were
        using var target = LoopDevice.Attach(dir, "target.img", garbage);
        var sink = new BlockDeviceSink(target.Device);
        await ThroughRingAsync(map.Bytes, Cut(map, "each header split"), sink.ConsumeAsync);
        Assert.Equal(map.Image, PayloadTestKit.ReadPrefix(target.Device, map.Image.Length));
        Assert.Equal(map.Image.Length - map.DataBytes, sink.GapBytesZeroed);
    }

    /// <summary>
    /// Lends <c>bytes</c> in segments of the given lengths, each in an array of its own that is overwritten with 0xCC
    /// as soon as the next segment is asked for (the loan is over). A copying read is counted and refused.
    /// </summary>
    private sealed class ScribblingLender(byte[] bytes, IReadOnlyList<int> segments) : SequentialReadStream, ISegmentReader
    {
        private int _next;
        private int _at;

        public byte[]? Current { get; private set; }
        public int ReadCalls { get; private set; }

        public ValueTask<ReadOnlyMemory<byte>> ReadSegmentAsync(CancellationToken cancellationToken)
        {
            if (Current is not null) Array.Fill(Current, (byte)0xCC);
            if (_next == segments.Count)
            {
                Current = null;
                return ValueTask.FromResult(ReadOnlyMemory<byte>.Empty);
            }
            int n = segments[_next++];
            // Lent from the middle of a larger array, as a ring slot lends a payload behind its frame header.
            Current = new byte[n + 64];
            bytes.AsSpan(_at, n).CopyTo(Current.AsSpan(32));
            _at += n;
            return ValueTask.FromResult<ReadOnlyMemory<byte>>(Current.AsMemory(32, n));
        }

        public override int Read(Span<byte> buffer)
        {
            ReadCalls++;
            throw new InvalidOperationException("the reader copied instead of borrowing");
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
    }
}
