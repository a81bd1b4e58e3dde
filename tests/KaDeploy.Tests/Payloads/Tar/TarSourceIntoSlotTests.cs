using System.Security.Cryptography;
using KaDeploy.IO;
using KaDeploy.Payloads.Tar;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Payloads.Tar;

/// <summary>
/// Issue 14 (/usr row): the tree source reads large file data straight into the server's ring slot, lent through
/// the digest stream, instead of through its own buffer. The archive and its digest must be exactly those of the
/// buffered path, whatever the file sizes around the frame and read boundaries.
/// </summary>
public class TarSourceIntoSlotTests
{
    private static readonly int[] Sizes =
    [
        0, 1, 511, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 100_000, 2 * 64 * 1024 + 512, 3 * 1024 * 1024 + 333, 1024 * 1024,
    ];

    private static string MakeTree(TempDirectory t)
    {
        string root = t.Sub("tree");
        Directory.CreateDirectory(Path.Combine(root, "sub"));
        int i = 0;
        foreach (int size in Sizes)
        {
            // Small files between the large ones, so that large data starts at every kind of offset inside a frame.
            File.WriteAllBytes(Path.Combine(root, $"f{i++:00}-{size}"), RandomNumberGenerator.GetBytes(size));
            File.WriteAllBytes(Path.Combine(root, "sub", $"s{i++:00}"), RandomNumberGenerator.GetBytes(i * 37));
        }
        return root;
    }

    // The archive through a stream that lends nothing (the buffered path), with its digest.
    private static async Task<(byte[] Archive, byte[] Digest)> BufferedAsync(string root, DigestAlgorithm algorithm)
    {
        var ms = new MemoryStream();
        using var digest = new DigestWriteStream(ms, algorithm);
        Assert.False(digest.LendsSegments);
        await new TarTreeSource(new TarTreeSourceOptions { Root = root, BufferSize = 16 * 1024 }).WriteToAsync(digest, default);
        return (ms.ToArray(), digest.Digest());
    }

    [Theory]
    [InlineData(DigestAlgorithm.XxHash128)]
    [InlineData(DigestAlgorithm.Sha256)]
    public async Task ReadingIntoTheRingSlotGivesTheSameArchiveAndDigest(DigestAlgorithm algorithm)
    {
        using var t = new TempDirectory();
        string root = MakeTree(t);
        var (want, wantDigest) = await BufferedAsync(root, algorithm);
        Assert.Equal(PayloadDigest.Of(algorithm, want), wantDigest);

        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        var reader = new RingReaderStream(ring.Attach("sink"));
        var draining = Task.Run(async () =>
        {
            var got = new MemoryStream();
            await reader.CopyToAsync(got);
            return got.ToArray();
        });
        var writer = new RingWriterStream(ring, default);
        var source = new TarTreeSource(new TarTreeSourceOptions { Root = root, BufferSize = 16 * 1024 });
        byte[] digestBytes;
        long length;
        using (var digest = new DigestWriteStream(writer, algorithm))
        {
            Assert.True(digest.LendsSegments);
            await source.WriteToAsync(digest, default);
            digestBytes = digest.Digest();
            length = digest.Length64;
            await writer.CompleteAsync(length, algorithm, digestBytes, default);
        }
        byte[] got = await draining.WaitAsync(TimeSpan.FromMinutes(2));

        Assert.Equal(want.Length, got.Length);
        Assert.True(want.AsSpan().SequenceEqual(got), "the archive read into the slots differs from the buffered one");
        Assert.Equal(want.Length, length);
        Assert.Equal(want.Length, source.BytesWritten);
        Assert.Equal(wantDigest, digestBytes);
        Assert.Equal(wantDigest, reader.End!.Digest);
    }

    [Theory, InlineData(KaDeploy.Security.StreamCipherKind.Aegis256), InlineData(KaDeploy.Security.StreamCipherKind.Aes256Gcm)]
    public async Task AKeyedSessionSealsWhatWasReadIntoTheSlotsPlaintextArea(KaDeploy.Security.StreamCipherKind kind)
    {
        using var t = new TempDirectory();
        string root = t.Sub("tree");
        Directory.CreateDirectory(root);
        foreach (int size in (int[])[100, 64 * 1024 + 1, 200_001])
            File.WriteAllBytes(Path.Combine(root, $"f{size}"), RandomNumberGenerator.GetBytes(size));
        var (want, wantDigest) = await BufferedAsync(root, DigestAlgorithm.XxHash128);

        using var cipher = new KaDeploy.Security.StreamCipher(RandomNumberGenerator.GetBytes(32), 7, kind);
        using var ring = new RelayRing(64 * RelayRing.SlotSize, sealedFrames: true);
        using var cursor = ring.Attach("wire");
        var writer = new RingWriterStream(ring, default, cipher);
        using (var digest = new DigestWriteStream(writer, DigestAlgorithm.XxHash128))
        {
            Assert.True(digest.LendsSegments);
            await new TarTreeSource(new TarTreeSourceOptions { Root = root, BufferSize = 16 * 1024 }).WriteToAsync(digest, default);
            Assert.Equal(wantDigest, digest.Digest());
            await writer.CompleteAsync(digest.Length64, DigestAlgorithm.XxHash128, wantDigest, default);
        }
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
    public async Task LargeFileDataIsReadIntoLentMemoryAndSmallFilesAreNot()
    {
        using var t = new TempDirectory();
        string root = MakeTree(t);
        var (want, wantDigest) = await BufferedAsync(root, DigestAlgorithm.XxHash128);
        var lending = new LendingStream();
        using var digest = new DigestWriteStream(lending, DigestAlgorithm.XxHash128);
        await new TarTreeSource(new TarTreeSourceOptions { Root = root, BufferSize = 16 * 1024 }).WriteToAsync(digest, default);

        Assert.Equal(want, lending.Bytes.ToArray());
        Assert.Equal(wantDigest, digest.Digest());
        // Every large file's data but its last (< 64 KiB) part went through lent memory; no small file's did.
        var large = Sizes.Where(s => s >= 64 * 1024).ToArray();
        Assert.InRange(lending.LentBytes, large.Sum(s => s - (64 * 1024 - 1L)), large.Sum(s => (long)s));
    }

    // A stream that lends 5000-byte pieces of its own buffer (not a frame size, so reads are cut anywhere).
    private sealed class LendingStream : SequentialWriteStream, ISegmentWriter
    {
        private readonly byte[] _piece = new byte[5000];
        public MemoryStream Bytes { get; } = new();
        public long LentBytes { get; private set; }
        public bool LendsSegments => true;

        public ValueTask<Memory<byte>> GetSegmentAsync(CancellationToken cancellationToken)
        {
            _piece.AsSpan().Fill(0xEE); // whatever the source does not fill must not reach the output
            return ValueTask.FromResult<Memory<byte>>(_piece);
        }

        public void Advance(int count)
        {
            Bytes.Write(_piece, 0, count);
            LentBytes += count;
        }

        public override void Write(ReadOnlySpan<byte> buffer) => Bytes.Write(buffer);
        public override void Write(byte[] buffer, int offset, int count) => Bytes.Write(buffer, offset, count);
        public override void Flush() { }
        public override long Position { get => Bytes.Length; set => throw new NotSupportedException(); }
    }
}
