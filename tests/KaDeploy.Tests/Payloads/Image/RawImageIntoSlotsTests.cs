using System.Security.Cryptography;
using KaDeploy.Cli;
using KaDeploy.IO;
using KaDeploy.Payloads;
using KaDeploy.Payloads.Block;
using KaDeploy.Payloads.Image;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.Session;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Payloads.Image;

/// <summary>
/// Issue 10 (one hop): a raw image in a regular file (--image FILE --raw) is read straight into the ring slot the
/// output lends, not through a buffer of its own. The block map must still give back the file exactly, leave zero
/// blocks out (but for at most one piece after dense data), and reach real nodes over real sockets verified.
/// </summary>
public class RawImageIntoSlotsTests
{
    private const int MiB = 1 << 20;

    // Random data, written zeros (allocated, not holes) and holes, with lengths that cut blocks, pieces and segments anywhere.
    private static string MakeImage(TempDirectory dir, int seed)
    {
        string path = dir.File("disk.img");
        var rng = new Random(seed);
        using var f = File.Create(path);
        void Random(long at, int length)
        {
            var b = new byte[length];
            rng.NextBytes(b);
            b[0] |= 1; // a block that starts with data is not all zero, whatever the generator gives
            f.Position = at;
            f.Write(b);
        }
        Random(0, 64 * 1024);                      // a first block of data, then written zeros
        f.Position = 64 * 1024;
        f.Write(new byte[3 * MiB]);
        Random(5 * MiB - 4096, 6 * MiB + 333);     // dense, across a hole's edge, ends inside a block
        f.Position = 12 * MiB;
        f.Write(new byte[5 * MiB]);                // written zeros after dense data
        Random(17 * MiB, 2 * MiB);
        Random(30 * MiB, 70_000);                  // after a hole
        Random(32 * MiB + 12_345 - 5000, 5000);    // after a hole, up to a last block shorter than the block size
        return path;
    }

    private static async Task<byte[]> DecodeAsync(byte[] map, long expectLength)
    {
        var reader = new BlockMapReader(new MemoryStream(map));
        var header = await reader.ReadHeaderAsync(default);
        Assert.Equal(expectLength, header.TotalLength);
        var image = new byte[header.TotalLength];
        while (await reader.ReadNextRunAsync(default) is { } run)
            await reader.ReadRunDataAsync(image.AsMemory((int)run.Offset, run.Length), default);
        return image;
    }

    [Theory]
    [InlineData(5000)]          // segments that cut blocks anywhere
    [InlineData(64 * 1024)]     // a ring frame's payload
    [InlineData(1_048_573)]     // larger than a piece read straight in
    public async Task TheImageDecodesToTheFileAndTheDigestCoversWhatWasSent(int segment)
    {
        using var dir = new TempDirectory("kad-rawslot");
        string path = MakeImage(dir, segment);
        var lending = new LendingStream(segment);
        using var digest = new DigestWriteStream(lending, DigestAlgorithm.XxHash128);
        Assert.True(digest.LendsSegments);
        var source = ImageSource.Open(path, new ImageSourceOptions { Raw = true });
        await source.WriteToAsync(digest, default);

        byte[] map = lending.Bytes.ToArray();
        byte[] file = File.ReadAllBytes(path);
        byte[] decoded = await DecodeAsync(map, file.Length);
        Assert.True(file.AsSpan().SequenceEqual(decoded), "the decoded image differs from the file");
        Assert.Equal(PayloadDigest.Of(DigestAlgorithm.XxHash128, map), digest.Digest());
        Assert.Equal(map.Length, digest.Length64);
        // Most data went through lent memory, not through the source's own buffer.
        Assert.True(lending.LentBytes > 3L * MiB, $"only {lending.LentBytes} bytes were read into lent memory");
    }

    [Fact]
    public async Task ZeroBlocksAreLeftOutButForOnePieceAfterDenseData()
    {
        using var dir = new TempDirectory("kad-rawslot");
        string path = MakeImage(dir, 1);
        var lending = new LendingStream(64 * 1024);
        await ImageSource.Open(path, new ImageSourceOptions { Raw = true }).WriteToAsync(lending, default);
        var reader = new BlockMapReader(new MemoryStream(lending.Bytes.ToArray()));
        await reader.ReadHeaderAsync(default);
        var sentZeros = new List<(long, int)>();
        byte[] file = File.ReadAllBytes(path);
        while (await reader.ReadNextRunAsync(default) is { } run)
        {
            var data = new byte[run.Length];
            await reader.ReadRunDataAsync(data, default);
            for (int b = 0; b < data.Length; b += BlockMapFormat.DefaultBlockSize)
                if (data.AsSpan(b, Math.Min(BlockMapFormat.DefaultBlockSize, data.Length - b)).IndexOfAnyExcept((byte)0) < 0)
                    sentZeros.Add((run.Offset + b, run.Length));
        }
        // Non-zero data: 64 KiB + (6 MiB + 333 + 4 KiB rounded to blocks) + 2 MiB + 70,000 (rounded). The first 3 MiB of
        // written zeros follow the first piece (cut exactly): none sent. The 5 MiB after dense data: at most one piece.
        long zeroBytes = sentZeros.Count * (long)BlockMapFormat.DefaultBlockSize;
        Assert.True(zeroBytes <= RawImageIntoSlots.DirectPiece, $"{zeroBytes} bytes of zero blocks were sent: {string.Join(", ", sentZeros.Take(20))}");
        Assert.True(sentZeros.All(z => z.Item1 >= 12L * MiB && z.Item1 < 13L * MiB), $"zero blocks sent outside the piece after dense data: {string.Join(", ", sentZeros.Take(20))}");
        Assert.True(reader.DataBytes < 12L * MiB, $"{reader.DataBytes} data bytes for about 8.2 MiB of data");
    }

    [Fact]
    public async Task AFileThatShrinksWhileItIsReadFailsTheSource()
    {
        using var dir = new TempDirectory("kad-rawslot");
        string path = dir.File("disk.img");
        File.WriteAllBytes(path, RandomNumberGenerator.GetBytes(8 * MiB));
        var source = ImageSource.Open(path, new ImageSourceOptions { Raw = true });
        bool cut = false;
        // The first 4 MiB piece goes through the buffer; the file is cut while the next is read into lent memory.
        var lending = new LendingStream(64 * 1024) { OnAdvance = total => { if (!cut && total > 5 * MiB) { cut = true; File.WriteAllBytes(path, new byte[MiB]); } } };
        var e = await Assert.ThrowsAsync<KaDeployException>(() => source.WriteToAsync(lending, default));
        Assert.Contains("shrank", e.Message);
        // Changed before the session's read began: refused as well.
        var again = new LendingStream(64 * 1024);
        var e2 = await Assert.ThrowsAsync<KaDeployException>(() => source.WriteToAsync(again, default));
        Assert.Contains("changed size", e2.Message);
    }

    [Theory]
    [InlineData(5000)]
    [InlineData(64 * 1024)]
    public async Task ATarImageIsReadIntoLentMemoryUnchanged(int segment)
    {
        using var dir = new TempDirectory("kad-tarslot");
        string tree = dir.Sub("tree");
        Directory.CreateDirectory(tree);
        foreach (int size in (int[])[0, 1, 511, 64 * 1024 + 7, 3 * MiB + 333])
            File.WriteAllBytes(Path.Combine(tree, $"f{size}"), RandomNumberGenerator.GetBytes(size));
        string tar = dir.File("image.tar");
        System.Formats.Tar.TarFile.CreateFromDirectory(tree, tar, includeBaseDirectory: false);
        var source = ImageSource.Open(tar);
        Assert.Equal(ImageFormat.Tar, source.Format);
        var lending = new LendingStream(segment);
        using var digest = new DigestWriteStream(lending, DigestAlgorithm.XxHash128);
        await source.WriteToAsync(digest, default);

        byte[] file = File.ReadAllBytes(tar);
        Assert.True(file.AsSpan().SequenceEqual(lending.Bytes.ToArray()), "the stream differs from the tar file");
        Assert.Equal(file.Length, lending.LentBytes); // all of it read into lent memory
        Assert.Equal(PayloadDigest.Of(DigestAlgorithm.XxHash128, file), digest.Digest());
    }

    /// <summary>The whole path on real sockets: server ring, every frame checked, the copy verified end to end by every node.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task ADenseImageWithZeroRunsReachesEveryNodeVerified(int arity)
    {
        using var dir = new TempDirectory("kad-rawslot");
        string image = MakeImage(dir, 7);
        var (report, _) = await LoopbackSession.RunAsync(ImageSource.Open(image, new ImageSourceOptions { Raw = true }), 3, arity,
            i => PayloadSelection.ClientSinks(dir.Sub($"copy{i}.img"), null, null, force: false, assumeZeroed: false, TextWriter.Null));
        Assert.True(report.Success, report.Message + "\n" + report.FormatTable());
        byte[] expected = SHA256.HashData(File.ReadAllBytes(image));
        for (int i = 0; i < 3; i++)
            Assert.Equal(expected, SHA256.HashData(File.ReadAllBytes(dir.Sub($"copy{i}.img"))));
        Assert.True(report.WireBytes < 12L * MiB, $"zero blocks were sent: {report.WireBytes} wire bytes");
    }

    [Fact]
    public async Task AKeyedSessionSealsWhatWasReadIntoTheSlotsAndEveryNodeVerifies()
    {
        // Keyed: the memory lent to the source is the slot's plaintext area, sealed into the wire slot afterwards.
        using var dir = new TempDirectory("kad-rawslot");
        string image = MakeImage(dir, 11);
        using var key = KaDeploy.Security.PresharedKey.Generate();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var log = new StringWriter();
        var sync = TextWriter.Synchronized(log);
        await using var server = new KaDeploy.Session.DeployServer(new KaDeploy.Session.ServerOptions
        {
            Source = ImageSource.Open(image, new ImageSourceOptions { Raw = true }), Clients = 2, Arity = 1, BufferBytes = 1L << 20,
            Bind = System.Net.IPAddress.Loopback, ControlPort = 0, Discovery = false, Session = "keyed-image", Key = key, Log = sync,
        });
        var run = server.RunAsync(timeout.Token);
        var clients = Enumerable.Range(0, 2).Select(i => new KaDeploy.Session.DeployClient(new KaDeploy.Session.ClientOptions
        {
            Server = $"127.0.0.1:{server.ControlPort}", Session = "keyed-image", Bind = LoopbackSession.NextAddress(), BufferBytes = 1L << 20,
            SinkFactory = PayloadSelection.ClientSinks(dir.Sub($"copy{i}.img"), null, null, force: false, assumeZeroed: false, TextWriter.Null),
            Key = key, Log = sync, NodeName = $"n{i}",
        }).RunAsync(timeout.Token)).ToArray();
        var report = await run;
        var results = await Task.WhenAll(clients);
        Assert.True(report.Success, report.Message + "\n" + log);
        Assert.All(results, r => Assert.True(r.Verified, r.Message));
        byte[] expected = SHA256.HashData(File.ReadAllBytes(image));
        for (int i = 0; i < 2; i++)
            Assert.Equal(expected, SHA256.HashData(File.ReadAllBytes(dir.Sub($"copy{i}.img"))));
    }

    // Lends pieces of a fixed size of its own buffer, filled with a pattern first: what the source does not fill must
    // not reach the output.
    private sealed class LendingStream(int segment) : SequentialWriteStream, ISegmentWriter
    {
        private readonly byte[] _piece = new byte[segment];
        public MemoryStream Bytes { get; } = new();
        public long LentBytes { get; private set; }
        public Action<long>? OnAdvance { get; init; }
        public bool LendsSegments => true;

        public ValueTask<Memory<byte>> GetSegmentAsync(CancellationToken cancellationToken)
        {
            _piece.AsSpan().Fill(0xEE);
            return ValueTask.FromResult<Memory<byte>>(_piece);
        }

        public void Advance(int count)
        {
            Bytes.Write(_piece, 0, count);
            LentBytes += count;
            OnAdvance?.Invoke(Bytes.Length);
        }

        public override void Write(ReadOnlySpan<byte> buffer) => Bytes.Write(buffer);
        public override void Write(byte[] buffer, int offset, int count) => Bytes.Write(buffer, offset, count);
        public override void Flush() { }
        public override long Position { get => Bytes.Length; set => throw new NotSupportedException(); }
    }
}
