using System.Security.Cryptography;
using KaDeploy.IO;
using KaDeploy.Payloads.Tar;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Payloads.Tar;

/// <summary>
/// Issue 14 (/usr row): a node's extractor writes file data straight from the segments its input lends (the ring
/// slot, through the digest stream) instead of copying it into a buffer first. Every byte must land where the archive
/// says, whatever the segments' sizes against entry, padding and sparse-part boundaries, and the digest must cover
/// what the sink consumed.
/// </summary>
public class TarSinkFromSlotTests
{
    private static readonly int[] Sizes = [0, 1, 511, 512, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 100_000, 3 * 1024 * 1024 + 333];

    private static (string Root, byte[] Archive) MakeArchive(TempDirectory t)
    {
        string root = t.Sub("src");
        Directory.CreateDirectory(Path.Combine(root, "d"));
        int i = 0;
        foreach (int size in Sizes)
        {
            File.WriteAllBytes(Path.Combine(root, $"f{i++:00}-{size}"), RandomNumberGenerator.GetBytes(size));
            File.WriteAllBytes(Path.Combine(root, "d", $"small{i++:00}"), RandomNumberGenerator.GetBytes(i * 53));
        }
        // A sparse file: its data parts and their map make the extractor copy several ranges of one entry.
        using (var sparse = new FileStream(Path.Combine(root, "sparse"), FileMode.CreateNew))
        {
            sparse.SetLength(9 * 1024 * 1024);
            sparse.Write(RandomNumberGenerator.GetBytes(70_000));
            sparse.Position = 4 * 1024 * 1024 + 12345;
            sparse.Write(RandomNumberGenerator.GetBytes(200_001));
        }
        var ms = new MemoryStream();
        new TarTreeSource(new TarTreeSourceOptions { Root = root }).WriteToAsync(ms, default).GetAwaiter().GetResult();
        return (root, ms.ToArray());
    }

    private static void AssertSameFiles(string want, string got)
    {
        var files = Directory.GetFiles(want, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(want, f)).Order().ToArray();
        Assert.Equal(files, Directory.GetFiles(got, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(got, f)).Order().ToArray());
        foreach (string f in files)
            Assert.True(File.ReadAllBytes(Path.Combine(want, f)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(got, f))), $"{f} differs");
    }

    [Theory]
    [InlineData(new[] { 700, 3 * 1024 * 1024 + 5, 64 * 1024, 1 })] // odd cuts, one piece larger than the reader's buffer
    [InlineData(new[] { 512 })]
    [InlineData(new[] { 64 * 1024 })]
    public async Task EveryByteLandsWhereTheArchiveSaysWhateverTheSegments(int[] pieces)
    {
        using var t = new TempDirectory();
        var (root, archive) = MakeArchive(t);
        string target = t.Sub("dst");
        Directory.CreateDirectory(target);
        var input = new LendingReadStream(archive, pieces);
        var sink = new TarTreeSink(new TarTreeSinkOptions { Target = target });
        sink.EnsureTargetUsable();
        await sink.ConsumeAsync(input, default);

        AssertSameFiles(root, target);
        Assert.True(input.LentBytes > archive.Length / 2, $"only {input.LentBytes} of {archive.Length} bytes were lent");
    }

    [Theory]
    [InlineData(DigestAlgorithm.XxHash128)]
    [InlineData(DigestAlgorithm.Frames)] // the default: the reader folds the frames it hands out, the sink hashes nothing
    public async Task ANodeExtractsFromItsRingAndItsDigestCoversWhatTheSinkConsumed(DigestAlgorithm algorithm)
    {
        using var t = new TempDirectory();
        var (root, archive) = MakeArchive(t);
        string target = t.Sub("dst");
        Directory.CreateDirectory(target);
        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        var frames = algorithm == DigestAlgorithm.Frames ? new FrameDigest() : null;
        var reader = new RingReaderStream(ring.Attach("sink")) { Frames = frames };
        using var digest = new DigestReadStream(reader, algorithm);
        var counted = new CountingLender(digest);
        var producing = Task.Run(async () =>
        {
            var writer = new RingWriterStream(ring, default);
            await writer.WriteAsync(archive);
            byte[]? content = frames is null ? PayloadDigest.Of(algorithm, archive) : null;
            return await writer.CompleteAsync(archive.Length, algorithm, content, default);
        });
        var sink = new TarTreeSink(new TarTreeSinkOptions { Target = target });
        sink.EnsureTargetUsable();
        await sink.ConsumeAsync(counted, default).WaitAsync(TimeSpan.FromMinutes(2));
        await digest.DrainAsync(default);
        byte[] sent = await producing;

        AssertSameFiles(root, target);
        Assert.True(counted.LentBytes > archive.Length / 2, $"only {counted.LentBytes} of {archive.Length} bytes were lent");
        Assert.Equal(archive.Length, digest.BytesRead);
        Assert.Equal(sent, frames?.Finish() ?? digest.Digest());
        Assert.Equal(reader.End!.Digest, sent);
    }

    // Passes everything through and counts the bytes the sink took as lent segments.
    private sealed class CountingLender(DigestReadStream inner) : SequentialReadStream, ISegmentReader
    {
        public long LentBytes { get; private set; }

        public async ValueTask<ReadOnlyMemory<byte>> ReadSegmentAsync(CancellationToken cancellationToken)
        {
            var segment = await inner.ReadSegmentAsync(cancellationToken);
            LentBytes += segment.Length;
            return segment;
        }

        public override int Read(Span<byte> buffer) => inner.Read(buffer);

        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            inner.ReadAsync(buffer, cancellationToken);

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            inner.ReadAsync(buffer, offset, count, cancellationToken);
    }

    // Lends the archive in pieces of the given sizes, in turn, from a scratch copy that is spoiled at the next call
    // (as a ring slot is reused): an extractor that kept lent memory too long writes garbage.
    private sealed class LendingReadStream(byte[] data, int[] pieces) : SequentialReadStream, ISegmentReader
    {
        private byte[] _scratch = [];
        private int _at;
        private int _turn;

        public long LentBytes { get; private set; }

        public ValueTask<ReadOnlyMemory<byte>> ReadSegmentAsync(CancellationToken cancellationToken)
        {
            Spoil();
            int n = Math.Min(pieces[_turn++ % pieces.Length], data.Length - _at);
            if (_scratch.Length < n) _scratch = new byte[n];
            data.AsSpan(_at, n).CopyTo(_scratch);
            _at += n;
            LentBytes += n;
            return ValueTask.FromResult<ReadOnlyMemory<byte>>(_scratch.AsMemory(0, n));
        }

        public override int Read(Span<byte> buffer)
        {
            Spoil();
            int n = Math.Min(Math.Min(pieces[_turn++ % pieces.Length], data.Length - _at), buffer.Length);
            data.AsSpan(_at, n).CopyTo(buffer);
            _at += n;
            return n;
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(Read(buffer.Span));

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            Task.FromResult(Read(buffer.AsSpan(offset, count)));

        private void Spoil() => _scratch.AsSpan().Fill(0xA5);
    }
}
