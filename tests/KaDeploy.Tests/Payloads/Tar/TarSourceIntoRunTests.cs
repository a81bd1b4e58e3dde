using System.Security.Cryptography;
using KaDeploy.IO;
using KaDeploy.Payloads.Tar;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Payloads.Tar;

/// <summary>
/// Issue 14, sixth session: the server's ring writer digests each frame beside its check, and the tree source fills a
/// run of several ring slots with one preadv. The archive, the digest and the frames must be exactly those of the
/// buffered path (a stream that lends nothing, digested by <see cref="DigestWriteStream"/>).
/// </summary>
public class TarSourceIntoRunTests
{
    private static readonly int[] Sizes =
    [
        0, 1, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 2 * 64 * 1024 + 512, 1024 * 1024, 1024 * 1024 + 7, 3 * 1024 * 1024 + 333, 5_000_000,
    ];

    private static string MakeTree(TempDirectory t, int[] sizes)
    {
        string root = t.Sub("tree");
        Directory.CreateDirectory(Path.Combine(root, "sub"));
        int i = 0;
        foreach (int size in sizes)
        {
            // Small files between the large ones: large data starts at every kind of offset inside a frame.
            File.WriteAllBytes(Path.Combine(root, $"f{i++:00}-{size}"), RandomNumberGenerator.GetBytes(size));
            File.WriteAllBytes(Path.Combine(root, "sub", $"s{i++:00}"), RandomNumberGenerator.GetBytes(i * 41));
        }
        return root;
    }

    private static async Task<(byte[] Archive, byte[] Digest)> BufferedAsync(string root, DigestAlgorithm algorithm)
    {
        var ms = new MemoryStream();
        using var digest = new DigestWriteStream(ms, algorithm);
        await new TarTreeSource(new TarTreeSourceOptions { Root = root, BufferSize = 16 * 1024 }).WriteToAsync(digest, default);
        return (ms.ToArray(), digest.Digest());
    }

    [Theory]
    [InlineData(DigestAlgorithm.XxHash128, 8)]
    [InlineData(DigestAlgorithm.XxHash128, 40)]
    [InlineData(DigestAlgorithm.Sha256, 24)]
    public async Task TheWritersOwnDigestAndRunsGiveTheBufferedArchiveAndDigest(DigestAlgorithm algorithm, int windowSlots)
    {
        using var t = new TempDirectory();
        string root = MakeTree(t, Sizes);
        var (want, wantDigest) = await BufferedAsync(root, algorithm);

        using var ring = new RelayRing(windowSlots * (long)RelayRing.SlotSize);
        var reader = new RingReaderStream(ring.Attach("sink"));
        var draining = Task.Run(async () =>
        {
            var got = new MemoryStream();
            await reader.CopyToAsync(got);
            return got.ToArray();
        });
        var writer = new RingWriterStream(ring, default, digest: algorithm);
        var source = new TarTreeSource(new TarTreeSourceOptions { Root = root, BufferSize = 16 * 1024 });
        await source.WriteToAsync(writer, default);
        long length = writer.WireBytes;
        byte[] digest = writer.Digest();
        await writer.CompleteAsync(length, algorithm, digest, default);
        byte[] got = await draining.WaitAsync(TimeSpan.FromMinutes(2));

        Assert.Equal(want.Length, got.Length);
        Assert.True(want.AsSpan().SequenceEqual(got), "the archive read into runs of slots differs from the buffered one");
        Assert.Equal(wantDigest, digest);
        Assert.Equal(wantDigest, reader.End!.Digest);
        Assert.Equal(want.Length, reader.End.PayloadLength);
    }

    [Theory, InlineData(KaDeploy.Security.StreamCipherKind.Aegis256), InlineData(KaDeploy.Security.StreamCipherKind.Aes256Gcm)]
    public async Task AKeyedRingSealsEveryFrameOfARunFromItsPlaintextArea(KaDeploy.Security.StreamCipherKind kind)
    {
        using var t = new TempDirectory();
        string root = MakeTree(t, [100, 64 * 1024 + 1, 1_500_001, 200_001]);
        var (want, wantDigest) = await BufferedAsync(root, DigestAlgorithm.XxHash128);

        using var cipher = new KaDeploy.Security.StreamCipher(RandomNumberGenerator.GetBytes(32), 7, kind);
        using var ring = new RelayRing(64 * RelayRing.SlotSize, sealedFrames: true);
        using var cursor = ring.Attach("wire");
        var writer = new RingWriterStream(ring, default, cipher, DigestAlgorithm.XxHash128);
        await new TarTreeSource(new TarTreeSourceOptions { Root = root, BufferSize = 16 * 1024 }).WriteToAsync(writer, default);
        long length = writer.WireBytes;
        byte[] digest = writer.Digest();
        Assert.Equal(wantDigest, digest);
        await writer.CompleteAsync(length, DigestAlgorithm.XxHash128, digest, default);
        var wire = new List<byte[]>();
        for (long i = 0; i < ring.Published; i++)
        {
            var f = cursor.Next(default);
            wire.Add(f.Bytes.ToArray());
            cursor.Advance();
        }

        var (published, error, end) = KaDeploy.Tests.Security.SealedDataFrameTests.Receive(wire, cipher);
        Assert.Null(error);
        Assert.True(want.AsSpan().SequenceEqual(published), "a node opened something else than the buffered archive");
        Assert.Equal(wantDigest, end!.Digest);
    }

    [Fact]
    public async Task ARunIsLentAtAFrameBoundaryOnlyAndItsFramesCarryTheirOwnChecks()
    {
        using var ring = new RelayRing(32 * RelayRing.SlotSize);
        using var cursor = ring.Attach("wire");
        var writer = new RingWriterStream(ring, default, digest: DigestAlgorithm.XxHash128);
        var pieces = new Memory<byte>[16];
        var payload = RandomNumberGenerator.GetBytes(5 * ProtocolConstants.MaxChunkPayload + 1000);

        // Mid-frame: only the rest of the current frame is lent.
        writer.Write(payload.AsSpan(0, 1000));
        Assert.Equal(1, await writer.GetSegmentsAsync(pieces, 4 << 20, default));
        Assert.Equal(ProtocolConstants.MaxChunkPayload - 1000, pieces[0].Length);
        payload.AsSpan(1000, pieces[0].Length).CopyTo(pieces[0].Span);
        writer.Advance(pieces[0].Length);

        // At a boundary: a run of whole payloads, as many as maxBytes allows.
        int n = await writer.GetSegmentsAsync(pieces, 4 * ProtocolConstants.MaxChunkPayload + 10, default);
        Assert.Equal(4, n);
        int at = ProtocolConstants.MaxChunkPayload;
        for (int i = 0; i < n; i++)
        {
            Assert.Equal(ProtocolConstants.MaxChunkPayload, pieces[i].Length);
            payload.AsSpan(at, pieces[i].Length).CopyTo(pieces[i].Span);
            at += pieces[i].Length;
        }
        writer.Advance(3 * ProtocolConstants.MaxChunkPayload + 7); // three frames and 7 bytes of the fourth
        writer.Write(payload.AsSpan(4 * ProtocolConstants.MaxChunkPayload + 7));
        byte[] digest = writer.Digest();
        await writer.CompleteAsync(payload.Length, DigestAlgorithm.XxHash128, digest, default);

        Assert.Equal(PayloadDigest.Of(DigestAlgorithm.XxHash128, payload), digest);
        var got = new MemoryStream();
        while (true)
        {
            var f = cursor.Next(default);
            cursor.Advance();
            if (f.Header.Type == DataFrameType.End) break;
            Assert.Equal(got.Length, f.Header.Offset);
            Assert.Equal(DataFrameHeader.ComputeChecksum(f.Payload.Span, f.Header.Offset), f.Header.Checksum);
            got.Write(f.Payload.Span);
        }
        Assert.True(payload.AsSpan().SequenceEqual(got.ToArray()), "the frames of a run do not hold the bytes written into it, in order");
    }

    [Fact]
    public async Task TheSourceFillsLentPiecesInOrderWhateverTheirSizes()
    {
        using var t = new TempDirectory();
        string root = MakeTree(t, Sizes);
        var (want, _) = await BufferedAsync(root, DigestAlgorithm.XxHash128);
        var lending = new RunLendingStream();
        await new TarTreeSource(new TarTreeSourceOptions { Root = root, BufferSize = 16 * 1024 }).WriteToAsync(lending, default);

        Assert.True(want.AsSpan().SequenceEqual(lending.Bytes.ToArray()), "the pieces of a vectored read were not filled in order");
        Assert.True(lending.MostPiecesFilled > 1, "no vectored read filled more than one piece");
    }

    // Lends three pieces of odd sizes at a time (not frame-sized), poisoned so that unfilled bytes show.
    private sealed class RunLendingStream : SequentialWriteStream, ISegmentWriter
    {
        private readonly byte[][] _pieces = [new byte[70_001], new byte[65_536], new byte[99_999]];
        private int _lent;
        public MemoryStream Bytes { get; } = new();
        public int MostPiecesFilled { get; private set; }
        public bool LendsSegments => true;

        public ValueTask<Memory<byte>> GetSegmentAsync(CancellationToken cancellationToken)
        {
            _pieces[0].AsSpan().Fill(0xEE);
            _lent = 1;
            return ValueTask.FromResult<Memory<byte>>(_pieces[0]);
        }

        public ValueTask<int> GetSegmentsAsync(Memory<byte>[] into, int maxBytes, CancellationToken cancellationToken)
        {
            _lent = Math.Min(into.Length, _pieces.Length);
            for (int i = 0; i < _lent; i++)
            {
                _pieces[i].AsSpan().Fill(0xEE);
                into[i] = _pieces[i];
            }
            return ValueTask.FromResult(_lent);
        }

        public void Advance(int count)
        {
            int used = 0;
            for (int i = 0; i < _lent && count > 0; i++, used++)
            {
                int n = Math.Min(count, _pieces[i].Length);
                Bytes.Write(_pieces[i], 0, n);
                count -= n;
            }
            Assert.Equal(0, count);
            MostPiecesFilled = Math.Max(MostPiecesFilled, used);
            _lent = 0;
        }

        public override void Write(ReadOnlySpan<byte> buffer) => Bytes.Write(buffer);
        public override void Write(byte[] buffer, int offset, int count) => Bytes.Write(buffer, offset, count);
        public override void Flush() { }
        public override long Position { get => Bytes.Length; set => throw new NotSupportedException(); }
    }
}
