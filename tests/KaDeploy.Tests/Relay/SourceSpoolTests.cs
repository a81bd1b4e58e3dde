using System.Formats.Tar;
using System.Security.Cryptography;
using KaDeploy.Payloads;
using KaDeploy.Payloads.Image;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Security;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// Issue 10: the spool of a source the server can read again (an uncompressed image file) keeps an index, not the
/// stream, and serves a resume by making the frames again from the file. What it sends must be exactly what the ring
/// sent, from any frame boundary, sparse or dense, tar or block map, clear or sealed; a file changed since must be
/// refused, never sent under the old checks.
/// </summary>
public class SourceSpoolTests
{
    private const int MiB = 1 << 20;

    // Random data, written zeros and holes (a sparse raw image), with a last block shorter than the block size.
    internal static string MakeSparseImage(TempDirectory dir, int seed)
    {
        string path = dir.File("sparse.img");
        var rng = new Random(seed);
        using var f = File.Create(path);
        void Random(long at, int length)
        {
            var b = new byte[length];
            rng.NextBytes(b);
            b[0] |= 1;
            f.Position = at;
            f.Write(b);
        }
        Random(0, 64 * 1024);
        f.Position = 64 * 1024;
        f.Write(new byte[2 * MiB]);                 // written zeros
        Random(3 * MiB - 4096, 3 * MiB + 333);      // dense, across a hole's edge
        f.Position = 7 * MiB;
        f.Write(new byte[MiB]);                     // zeros after dense data
        for (int i = 0; i < 6; i++) Random(9 * MiB + i * 128 * 1024, 64 * 1024); // data and zero blocks alternating
        Random(14 * MiB + 12_345 - 5000, 5000);     // after a hole, to a last block shorter than the block size
        return path;
    }

    internal static string MakeDenseImage(TempDirectory dir, int length)
    {
        string path = dir.File("dense.img");
        var b = RandomNumberGenerator.GetBytes(length);
        for (int i = 0; i < b.Length; i += 4096) b[i] |= 1;
        File.WriteAllBytes(path, b);
        return path;
    }

    private static string MakeTarImage(TempDirectory dir)
    {
        string path = dir.File("tree.tar");
        using var f = File.Create(path);
        using var tar = new TarWriter(f, TarEntryFormat.Pax);
        var rng = new Random(5);
        foreach (int size in new[] { 3 * MiB + 17, 100, 0, MiB - 3 })
        {
            var data = new byte[size];
            rng.NextBytes(data);
            tar.WriteEntry(new PaxTarEntry(TarEntryType.RegularFile, $"f{size}") { DataStream = new MemoryStream(data) });
        }
        return path;
    }

    // What the ring sent: every frame's wire bytes in order, and where each starts in them, by stream offset.
    internal sealed record Sent(byte[] Wire, Dictionary<long, int> StartOf, long WireLength);

    // Produces the source's stream as the server does (source → digest → ring writer, observed by the spool), drained by one
    // child (SourceSpoolDeviceTests too).
    internal static async Task<Sent> ProduceAsync(IPayloadSource source, StreamSpool spool, StreamCipher? cipher)
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize, 0, sealedFrames: cipher is not null);
        var child = ring.Attach("child");
        var wire = new MemoryStream();
        var starts = new Dictionary<long, int>();
        var draining = Task.Run(async () =>
        {
            while (true)
            {
                var f = await child.NextAsync(default);
                starts[f.Header.Offset] = (int)wire.Length;
                wire.Write(f.Bytes.Span);
                child.Advance();
                if (f.Header.Type == DataFrameType.End) break;
            }
            child.Dispose();
        });
        var writer = new RingWriterStream(ring, default, cipher) { Observer = spool.Observer };
        using var digest = new DigestWriteStream(writer, DigestAlgorithm.Frames);
        await source.WriteToAsync(digest, default);
        await writer.CompleteAsync(digest.Length64, DigestAlgorithm.Frames, null, default);
        await draining.WaitAsync(Eventually.Deadline);
        return new Sent(wire.ToArray(), starts, writer.WireBytes);
    }

    private static async Task AssertServesAsSentAsync(StreamSpool spool, Sent sent, long offset)
    {
        Assert.Null(spool.CannotServe(offset));
        var served = new MemoryStream();
        await spool.ServeAsync(served, offset, default);
        int from = sent.StartOf[offset];
        Assert.True(sent.Wire.AsSpan(from).SequenceEqual(served.ToArray()), $"the frames served from offset {offset} differ from those the ring sent");
    }

    // Frame boundaries to resume at: the start, one in the middle, the last Data frame, and the stream's end (End frame only).
    private static long[] Offsets(Sent sent)
    {
        var data = sent.StartOf.Keys.Order().ToArray(); // Data frame offsets, and the End frame's (the wire length)
        return [0, data[data.Length / 2], data[^2], data[^1]];
    }

    public static TheoryData<string, bool> Images => new()
    {
        { "sparse", false }, { "dense", false }, { "tar", false }, { "sparse", true }, { "tar", true },
    };

    private static (ImageSource Source, string Path, SourceLayout Layout) Open(TempDirectory dir, string kind) => kind switch
    {
        "sparse" => (ImageSource.Open(MakeSparseImage(dir, 3), new ImageSourceOptions { Raw = true }), dir.File("sparse.img"), SourceLayout.BlockMap),
        "dense" => (ImageSource.Open(MakeDenseImage(dir, 5 * MiB + 4321), new ImageSourceOptions { Raw = true }), dir.File("dense.img"), SourceLayout.BlockMap),
        _ => (ImageSource.Open(MakeTarImage(dir)), dir.File("tree.tar"), SourceLayout.Plain),
    };

    [Theory]
    [MemberData(nameof(Images))]
    public async Task AResumeFromTheSourceSpoolGetsTheFramesTheRingSentByteForByte(string kind, bool keyed)
    {
        using var dir = new TempDirectory("kad-srcspool");
        var (source, path, layout) = Open(dir, kind);
        Assert.Equal(layout, source.RereadLayout);
        var (key, id) = StreamCipher.NewStream();
        using var cipher = keyed ? new StreamCipher(key, id) : null;
        using var spool = StreamSpool.FromSource(path, layout, keyed ? () => new StreamCipher(key, id) : null);
        Assert.False(spool.NeedsFeed);
        Assert.Null(spool.KeepsLastBytes);

        // A resume asked for before the stream is produced waits for its frames, and gets all of them.
        var early = new MemoryStream();
        var serving = spool.ServeAsync(early, 0, default);
        var sent = await ProduceAsync(source, spool, cipher);
        await serving.WaitAsync(Eventually.Deadline);
        Assert.True(sent.Wire.AsSpan().SequenceEqual(early.ToArray()), "a resume served while the stream was produced differs");

        foreach (long offset in Offsets(sent)) await AssertServesAsSentAsync(spool, sent, offset);
        Assert.Contains("not a frame boundary", spool.CannotServe(sent.StartOf.Keys.Order().ElementAt(1) + 1));
        Assert.Contains("not in the stream", spool.CannotServe(sent.WireLength + 1));
    }

    [Theory]
    [InlineData("dense", false)]
    [InlineData("sparse", true)]
    [InlineData("tar", false)]
    public async Task AFileChangedSinceItWasSentIsRefusedNeverSentUnderTheOldChecks(string kind, bool keyed)
    {
        using var dir = new TempDirectory("kad-srcspool");
        var (source, path, layout) = Open(dir, kind);
        var (key, id) = StreamCipher.NewStream();
        using var cipher = keyed ? new StreamCipher(key, id) : null;
        using var spool = StreamSpool.FromSource(path, layout, keyed ? () => new StreamCipher(key, id) : null);
        var sent = await ProduceAsync(source, spool, cipher);

        // One byte of data flipped, well after the start (in the sparse image: inside its dense run).
        long at = kind == "sparse" ? 4 * MiB : new FileInfo(path).Length / 2;
        using (var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite))
        {
            var b = new byte[1];
            RandomAccess.Read(f, b, at);
            b[0] ^= 0x40;
            RandomAccess.Write(f, b, at);
        }
        var served = new MemoryStream();
        var e = await Assert.ThrowsAsync<SourceChangedException>(() => spool.ServeAsync(served, 0, default));
        Assert.Contains("the source changed since it was sent", e.Message);
        Assert.Contains(path, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        // What went out before the refusal is what the ring sent, and it stops before the changed frame.
        var got = served.ToArray();
        Assert.True(sent.Wire.AsSpan(0, got.Length).SequenceEqual(got), "bytes sent before the refusal differ from the ring's");
        Assert.True(got.Length < sent.Wire.Length - RelayRing.SlotSize);

        // A file cut short is refused too.
        File.WriteAllBytes(path, []);
        var cut = await Assert.ThrowsAsync<SourceChangedException>(() => spool.ServeAsync(new MemoryStream(), 0, default));
        Assert.Contains(path, cut.Message);
    }
}
