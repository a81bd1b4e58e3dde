using System.Security.Cryptography;
using KaDeploy.Payloads.Block;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Payloads.Block;

/// <summary>
/// The page-aligned writer carries each lent piece's unaligned tail over to the next write: the file must still hold
/// every byte at its offset, whatever the pieces' lengths and gaps, and nothing may be read from a piece after its
/// loan ended.
/// </summary>
public class PageAlignedWriterTests
{
    private const int MiB = 1024 * 1024;

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void PiecesCutAnywhereLandAtTheirOffsetsAndGapsStayHoles(int seed)
    {
        const int total = 3 * MiB + 123;
        var random = new Random(seed);
        byte[] expected = new byte[total];
        int[] lengths = [1, 13, 4083, 4096, 4097, 65_523, 65_536];
        using var dir = new TempDirectory();
        using (BlockFile target = BlockFile.OpenWrite(dir.File("target.img")))
        {
            RandomAccess.SetLength(target.Handle, total);
            var writer = new PageAlignedWriter(target);
            byte[] loan = new byte[80_000];
            int at = random.Next(2) == 0 ? 0 : random.Next(1, 5000); // the first piece on or off the grid
            while (true)
            {
                if (random.Next(6) == 0) at += random.Next(1, 9000); // a gap: a hole, or a page written in two parts
                int length = random.Next(3) == 0 ? random.Next(1, 70_000) : lengths[random.Next(lengths.Length)];
                if (at + length > total) break;
                random.NextBytes(expected.AsSpan(at, length));
                // Lent from a buffer that is overwritten as soon as the write returns, as a ring slot is reused.
                expected.AsSpan(at, length).CopyTo(loan.AsSpan(17));
                writer.Write(loan.AsSpan(17, length), at);
                Assert.InRange(writer.Pending, 0, 4095);
                Array.Fill(loan, (byte)0xCC);
                at += length;
            }
            writer.Flush();
            Assert.Equal(0, writer.Pending);
        }
        Assert.Equal(expected, File.ReadAllBytes(dir.File("target.img")));
    }

    [Fact]
    public async Task ARawStreamInOddFramesReachesAFileWhole()
    {
        byte[] stream = PayloadTestKit.RandomBytes(5 * MiB + 777, seed: 5);
        using var dir = new TempDirectory();
        var sink = new RawStreamSink(dir.File("target.img"));
        await ThroughRingAsync(stream, OddFrames(stream.Length, seed: 6), sink.ConsumeAsync);
        Assert.Equal(stream.Length, sink.BytesWritten);
        Assert.Equal(stream, File.ReadAllBytes(dir.File("target.img")));
    }

    [SkippableFact]
    public async Task ARawStreamInOddFramesReachesABlockDeviceWhole()
    {
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        byte[] stream = PayloadTestKit.RandomBytes(5 * MiB + 777, seed: 7);
        using var dir = new TempDirectory();
        byte[] garbage = new byte[6 * MiB];
        Array.Fill(garbage, (byte)0xA5);
        using var target = LoopDevice.Attach(dir, "target.img", garbage);
        var sink = new RawStreamSink(target.Device);
        await ThroughRingAsync(stream, OddFrames(stream.Length, seed: 8), sink.ConsumeAsync);
        Assert.Equal(stream, PayloadTestKit.ReadPrefix(target.Device, stream.Length));
        Assert.Equal((byte)0xA5, PayloadTestKit.ReadPrefix(target.Device, stream.Length + 1)[^1]); // nothing past the end
    }

    [SkippableFact]
    public async Task SealedSizeFramesReadNothingBackFromABlockDevice()
    {
        // A keyed session's frames carry 65,504 or 65,520 bytes of plaintext: written where they land, every write
        // would begin and end inside a page of the device, and the kernel reads each such page from the device before
        // it can change part of it (4,066 reads for 256 MiB, measured). Carried over to whole pages, none is read.
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        Skip.If(Directory.Exists("/run/udev"), "udev may probe the new device at any time: its reads would be counted");
        byte[] stream = PayloadTestKit.RandomBytes(4 * MiB + 8192, seed: 9); // ends on a page boundary: the last write reads nothing either
        using var dir = new TempDirectory();
        using var target = LoopDevice.Attach(dir, "target.img", new byte[5 * MiB]);
        PayloadTestKit.Run("blockdev", "--flushbufs", target.Device); // nothing of the device in the page cache
        long readsBefore = DeviceReads(target.Device);
        var sink = new RawStreamSink(target.Device);
        int frame = KaDeploy.Protocol.ProtocolConstants.MaxChunkPayload - 32; // an AEGIS-256 frame's plaintext
        var frames = Enumerable.Repeat(frame, stream.Length / frame).Append(stream.Length % frame).ToList();
        await ThroughRingAsync(stream, frames, sink.ConsumeAsync);
        Assert.Equal(readsBefore, DeviceReads(target.Device));
        Assert.Equal(stream, PayloadTestKit.ReadPrefix(target.Device, stream.Length));
    }

    [SkippableFact]
    public async Task AFullFileSystemFailsTheLentWritesWithTheKernelsReason()
    {
        // The carried writes are pwritev(2) calls of our own: ENOSPC must still come back as one line naming the
        // target, and the frames before it must have been written where they belong.
        Skip.IfNot(Environment.IsPrivilegedProcess, "mounting a small tmpfs to fill needs root");
        using var dir = new TempDirectory();
        string small = dir.File("small");
        Directory.CreateDirectory(small);
        Assert.Equal(0, TempDirectory.Run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small));
        try
        {
            byte[] stream = PayloadTestKit.RandomBytes(3 * MiB, seed: 10);
            string file = Path.Combine(small, "target.img");
            var e = await Assert.ThrowsAsync<KaDeployException>(() =>
                ThroughRingAsync(stream, OddFrames(stream.Length, seed: 11), new RawStreamSink(file).ConsumeAsync));
            Assert.Contains($"writing {file} at offset", e.Message);
            Assert.Contains("No space left on device", e.Message);
            Assert.DoesNotContain('\n', e.Message);
            byte[] written = File.ReadAllBytes(file);
            Assert.InRange(written.Length, 512 * 1024, MiB); // the writes before the full disk landed, in order
            Assert.Equal(stream.AsSpan(0, written.Length).ToArray(), written);
        }
        finally
        {
            TempDirectory.Run("umount", "-l", small);
        }
    }

    // Reads completed on a block device since it appeared (the first field of /sys/block/NAME/stat).
    private static long DeviceReads(string device) =>
        long.Parse(File.ReadAllText($"/sys/block/{Path.GetFileName(device)}/stat").Split(' ', StringSplitOptions.RemoveEmptyEntries)[0]);

    // Frame lengths from 1 byte to a full frame, none on the page grid for long.
    private static List<int> OddFrames(int length, int seed)
    {
        var random = new Random(seed);
        var frames = new List<int>();
        for (int at = 0; at < length;)
        {
            int n = Math.Min(length - at, random.Next(4) == 0 ? random.Next(1, 100) : random.Next(1, KaDeploy.Protocol.ProtocolConstants.MaxChunkPayload + 1));
            frames.Add(n);
            at += n;
        }
        return frames;
    }

    // Publishes the bytes into a real ring as Data frames, then an End frame, while the sink takes them as a node's does.
    private static async Task ThroughRingAsync(byte[] bytes, IReadOnlyList<int> frames, Func<Stream, CancellationToken, Task> consume)
    {
        using var cts = PayloadTestKit.SafetyTimeout(120);
        using var ring = new RelayRing(1 << 20);
        using var reader = new RingReaderStream(ring.Attach("sink"));
        using var digest = new DigestReadStream(reader, KaDeploy.Protocol.DigestAlgorithm.Sha256);
        Task produce = Task.Run(async () =>
        {
            int at = 0;
            foreach (int n in frames)
            {
                await WireFrames.PublishAsync(ring, WireFrames.Data(bytes.AsSpan(at, n), at), cts.Token);
                at += n;
            }
            await WireFrames.PublishAsync(ring, WireFrames.End(at, at, SHA256.HashData(bytes)), cts.Token);
        }, cts.Token);
        try
        {
            await consume(digest, cts.Token);
        }
        catch
        {
            await cts.CancelAsync(); // a failed consumer leaves the producer waiting for a slot
            try { await produce; }
            catch (OperationCanceledException) { }
            throw;
        }
        await produce;
        Assert.Equal(SHA256.HashData(bytes), digest.Digest());
    }
}
