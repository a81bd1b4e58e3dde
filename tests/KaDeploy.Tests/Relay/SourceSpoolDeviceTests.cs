using KaDeploy.Payloads;
using KaDeploy.Payloads.Block;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Security;
using KaDeploy.Tests.Payloads.Block;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// Issue 10 for a block device source (<c>--device</c>): the server sends a block map of the device, and its spool
/// keeps only an index, serving a resume by reading the device again. On a real loop device: a resume from the middle
/// gets exactly the frames the ring sent, and a device written to since it was sent is refused with the reason, never
/// sent under the old checks. Needs root (loop devices); skipped with the reason otherwise.
/// </summary>
public class SourceSpoolDeviceTests
{
    private const int MiB = 1 << 20;

    // Dense data, a zero stretch, data and zero blocks alternating, one odd sector, data at the end: the block map leaves
    // the zero blocks out, so the spool's index has DATA records with gaps between them.
    private static byte[] DeviceImage()
    {
        byte[] image = new byte[16 * MiB];
        var random = new Random(21);
        random.NextBytes(image.AsSpan(0, 3 * MiB + 4096));
        for (int i = 0; i < 16; i++) random.NextBytes(image.AsSpan(4 * MiB + i * 128 * 1024, 64 * 1024));
        image[8 * MiB + 512] = 7;
        random.NextBytes(image.AsSpan(image.Length - 100_000));
        return image;
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AResumeFromADeviceSpoolGetsTheFramesTheRingSentByteForByte(bool keyed)
    {
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        using var dir = new TempDirectory("kad-devspool");
        byte[] image = DeviceImage();
        using LoopDevice loop = LoopDevice.Attach(dir, "dev.img", image);
        var source = new BlockDeviceSource(loop.Device);
        Assert.True(source.IsBlockDevice);
        var (key, id) = StreamCipher.NewStream();
        using var cipher = keyed ? new StreamCipher(key, id) : null;
        using var spool = StreamSpool.FromSource(loop.Device, SourceLayout.BlockMap, keyed ? () => new StreamCipher(key, id) : null);
        Assert.Contains($"re-read from {loop.Device}", spool.Description);

        var sent = await SourceSpoolTests.ProduceAsync(source, spool, cipher);
        Assert.True(source.DataBytesSent < image.Length / 2, $"sent {source.DataBytesSent} data bytes: the zero blocks were not left out");

        // The middle frame, and every fifth boundary (through the dense run, the alternating blocks and the tail).
        var data = sent.StartOf.Keys.Order().ToArray();
        foreach (long offset in data.Where((_, i) => i % 5 == 0).Prepend(data[data.Length / 2]))
        {
            Assert.Null(spool.CannotServe(offset));
            var served = new MemoryStream();
            await spool.ServeAsync(served, offset, default);
            Assert.True(sent.Wire.AsSpan(sent.StartOf[offset]).SequenceEqual(served.ToArray()),
                $"the frames served from offset {offset} of {loop.Device} differ from those the ring sent");
        }
    }

    [SkippableTheory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ADeviceWrittenToSinceItWasSentIsRefusedNeverSentUnderTheOldChecks(bool keyed)
    {
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        using var dir = new TempDirectory("kad-devspool");
        using LoopDevice loop = LoopDevice.Attach(dir, "dev.img", DeviceImage());
        var (key, id) = StreamCipher.NewStream();
        using var cipher = keyed ? new StreamCipher(key, id) : null;
        using var spool = StreamSpool.FromSource(loop.Device, SourceLayout.BlockMap, keyed ? () => new StreamCipher(key, id) : null);
        var sent = await SourceSpoolTests.ProduceAsync(new BlockDeviceSource(loop.Device), spool, cipher);

        // One byte of a data block flipped through the device itself (the page cache the spool reads through).
        const long at = 2 * MiB + 123;
        using (var d = File.OpenHandle(loop.Device, FileMode.Open, FileAccess.ReadWrite))
        {
            var b = new byte[1];
            RandomAccess.Read(d, b, at);
            b[0] ^= 0x40;
            RandomAccess.Write(d, b, at);
        }
        var served = new MemoryStream();
        var e = await Assert.ThrowsAsync<SourceChangedException>(() => spool.ServeAsync(served, 0, default));
        Assert.Contains("the source changed since it was sent", e.Message);
        Assert.Contains(loop.Device, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        // What went out before the refusal is what the ring sent, and it stops before the changed frame.
        var got = served.ToArray();
        Assert.True(sent.Wire.AsSpan(0, got.Length).SequenceEqual(got), "bytes sent before the refusal differ from the ring's");
        Assert.True(got.Length < sent.Wire.Length - RelayRing.SlotSize);
        // A resume from past the changed frame does not read it, and is served as sent.
        long after = sent.StartOf.Keys.Order().First(o => o > at + RelayRing.SlotSize);
        var rest = new MemoryStream();
        await spool.ServeAsync(rest, after, default);
        Assert.True(sent.Wire.AsSpan(sent.StartOf[after]).SequenceEqual(rest.ToArray()), "a resume past the changed frame differs");
    }
}
