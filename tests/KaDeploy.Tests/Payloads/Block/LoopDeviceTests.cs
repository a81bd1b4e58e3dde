using KaDeploy.Payloads.Block;

namespace KaDeploy.Tests.Payloads.Block;

/// <summary>A loop device over a temporary image file; detached and deleted on Dispose.</summary>
internal sealed class LoopDevice : IDisposable
{
    private LoopDevice(string backingFile, string device)
    {
        BackingFile = backingFile;
        Device = device;
    }

    public string BackingFile { get; }
    public string Device { get; }

    public static string? WhyUnavailable()
    {
        if (Environment.UserName != "root") return "loop devices need root";
        if (!File.Exists("/usr/sbin/losetup") && !File.Exists("/sbin/losetup")) return "losetup is not installed";
        if (!File.Exists("/dev/loop-control")) return "no /dev/loop-control (loop module not loaded or not in a container that allows it)";
        return null;
    }

    /// <summary>Attaches <paramref name="content"/> (written to a file in <paramref name="dir"/>) as a loop device.</summary>
    public static LoopDevice Attach(TempDirectory dir, string name, byte[] content)
    {
        string file = dir.File(name);
        File.WriteAllBytes(file, content);
        string device = PayloadTestKit.Run("losetup", "-f", "--show", file);
        return new LoopDevice(file, device);
    }

    public void Dispose()
    {
        try { PayloadTestKit.Run("losetup", "-d", Device); }
        catch (InvalidOperationException) { }
        File.Delete(BackingFile);
    }
}

public class LoopDeviceTests
{
    private const int MiB = 1024 * 1024;

    private static byte[] DiskLikeImage(int length, int seed)
    {
        // Data blocks at the start, a long zero stretch, scattered single blocks, one odd sector, data at the end.
        byte[] image = new byte[length];
        var random = new Random(seed);
        random.NextBytes(image.AsSpan(0, 3 * MiB + 4096));
        for (int i = 0; i < 20; i++)
            random.NextBytes(image.AsSpan(random.Next(8, length / 65536 - 2) * 65536, 65536));
        image[length / 2 + 512] = 7;
        random.NextBytes(image.AsSpan(length - 100_000));
        return image;
    }

    private static byte[] Garbage(int length)
    {
        byte[] garbage = new byte[length];
        Array.Fill(garbage, (byte)0xA5);
        return garbage;
    }

    [SkippableFact]
    public async Task DeviceCopiesToDeviceAndGapsReadBackAsZero()
    {
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        using var dir = new TempDirectory();
        byte[] image = DiskLikeImage(48 * MiB, seed: 11);
        using LoopDevice source = LoopDevice.Attach(dir, "a.img", image);
        using LoopDevice target = LoopDevice.Attach(dir, "b.img", Garbage(64 * MiB)); // larger, full of garbage
        using var cts = PayloadTestKit.SafetyTimeout();

        var blockSource = new BlockDeviceSource(source.Device);
        Assert.True(blockSource.IsBlockDevice);
        Assert.Equal(image.Length, blockSource.Length);
        var sink = new BlockDeviceSink(target.Device);
        await PayloadTestKit.TransferAsync(blockSource, sink, cts.Token);

        Assert.True(blockSource.DataBytesSent < image.Length / 2, $"sent {blockSource.DataBytesSent} data bytes");
        Assert.True(sink.GapBytesZeroed > image.Length / 2);
        byte[] copied = PayloadTestKit.ReadPrefix(target.Device, 64 * MiB);
        Assert.True(image.AsSpan().SequenceEqual(copied.AsSpan(0, image.Length)), "target differs from the source");
        // Past the image's end the target is not the image's business: left as it was.
        Assert.True(copied.AsSpan(image.Length).IndexOfAnyExcept((byte)0xA5) < 0);
    }

    [SkippableFact]
    public async Task AssumeZeroedLeavesGapsAlone()
    {
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        using var dir = new TempDirectory();
        byte[] image = DiskLikeImage(16 * MiB, seed: 12);
        using LoopDevice source = LoopDevice.Attach(dir, "a.img", image);
        using LoopDevice target = LoopDevice.Attach(dir, "b.img", Garbage(16 * MiB));
        using var cts = PayloadTestKit.SafetyTimeout();

        var sink = new BlockDeviceSink(target.Device, new BlockDeviceSinkOptions { AssumeZeroed = true });
        await PayloadTestKit.TransferAsync(new BlockDeviceSource(source.Device), sink, cts.Token);

        Assert.Equal(0, sink.GapBytesZeroed);
        byte[] copied = PayloadTestKit.ReadPrefix(target.Device, image.Length);
        Assert.True(image.AsSpan(0, 3 * MiB).SequenceEqual(copied.AsSpan(0, 3 * MiB)));
        Assert.Equal(0xA5, copied[8 * MiB - 1]); // a gap: the operator said it was zero, so it was not touched
    }

    [SkippableFact]
    public async Task TargetSmallerThanImageIsRefusedUntouched()
    {
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        using var dir = new TempDirectory();
        using LoopDevice source = LoopDevice.Attach(dir, "a.img", DiskLikeImage(16 * MiB, seed: 13));
        using LoopDevice target = LoopDevice.Attach(dir, "b.img", Garbage(8 * MiB));
        using var cts = PayloadTestKit.SafetyTimeout();

        var e = await Assert.ThrowsAsync<KaDeployException>(() =>
            PayloadTestKit.TransferAsync(new BlockDeviceSource(source.Device), new BlockDeviceSink(target.Device), cts.Token));
        Assert.Contains($"holds {8 * MiB} bytes, the image needs {16 * MiB}", e.Message);
        Assert.True(PayloadTestKit.ReadPrefix(target.Device, 8 * MiB).AsSpan().IndexOfAnyExcept((byte)0xA5) < 0);
    }

    [SkippableFact]
    public async Task TargetInUseIsRefused()
    {
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        using var dir = new TempDirectory();
        byte[] image = DiskLikeImage(16 * MiB, seed: 15);
        File.WriteAllBytes(dir.File("a.img"), image);
        using LoopDevice target = LoopDevice.Attach(dir, "b.img", Garbage(16 * MiB));
        using var cts = PayloadTestKit.SafetyTimeout();

        // Held the way a mount holds it: an exclusive open of the block device.
        using (BlockNative.OpenExclusiveForWrite(target.Device))
        {
            var e = await Assert.ThrowsAsync<KaDeployException>(() =>
                PayloadTestKit.TransferAsync(new BlockDeviceSource(dir.File("a.img")), new BlockDeviceSink(target.Device), cts.Token));
            Assert.Contains("is in use", e.Message);
            var raw = await Assert.ThrowsAsync<KaDeployException>(() =>
                new RawStreamSink(target.Device).ConsumeAsync(new MemoryStream(new byte[4096]), cts.Token));
            Assert.Contains("is in use", raw.Message);
        }
        Assert.True(PayloadTestKit.ReadPrefix(target.Device, 16 * MiB).AsSpan().IndexOfAnyExcept((byte)0xA5) < 0);

        // Released, the same copy goes through: an image file as the source, a device as the target.
        await PayloadTestKit.TransferAsync(new BlockDeviceSource(dir.File("a.img")), new BlockDeviceSink(target.Device), cts.Token);
        Assert.Equal(image, PayloadTestKit.ReadPrefix(target.Device, image.Length));
    }

    [SkippableFact]
    public async Task RawStreamCopiesDeviceToDevice()
    {
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        using var dir = new TempDirectory();
        byte[] image = PayloadTestKit.RandomBytes(12 * MiB, seed: 14);
        using LoopDevice source = LoopDevice.Attach(dir, "a.img", image);
        using LoopDevice target = LoopDevice.Attach(dir, "b.img", Garbage(12 * MiB));
        using var cts = PayloadTestKit.SafetyTimeout();

        var rawSource = new RawFileSource(source.Device);
        Assert.Equal(image.Length, rawSource.EstimatedLength);
        await PayloadTestKit.TransferAsync(rawSource, new RawStreamSink(target.Device), cts.Token);
        Assert.Equal(image, PayloadTestKit.ReadPrefix(target.Device, image.Length));
    }

    [SkippableFact]
    public async Task ImageSourceOverADeviceSendsABlockMap()
    {
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        using var dir = new TempDirectory();
        byte[] image = DiskLikeImage(16 * MiB, seed: 16);
        using LoopDevice source = LoopDevice.Attach(dir, "a.img", image);
        using var cts = PayloadTestKit.SafetyTimeout();

        var opened = KaDeploy.Payloads.Image.ImageSource.Open(source.Device);
        Assert.Equal(KaDeploy.Payloads.Image.ImageFormat.RawDisk, opened.Format);
        Assert.Equal(image.Length, opened.Length);
        await PayloadTestKit.TransferAsync(opened, new BlockDeviceSink(dir.File("copy.img")), cts.Token);
        Assert.Equal(image, File.ReadAllBytes(dir.File("copy.img")));
    }

    [SkippableFact]
    public async Task RawStreamLargerThanDeviceIsRefused()
    {
        string? why = LoopDevice.WhyUnavailable();
        Skip.If(why is not null, why);
        using var dir = new TempDirectory();
        using LoopDevice target = LoopDevice.Attach(dir, "b.img", Garbage(4 * MiB));
        using var cts = PayloadTestKit.SafetyTimeout();

        var e = await Assert.ThrowsAsync<KaDeployException>(() =>
            new RawStreamSink(target.Device).ConsumeAsync(new MemoryStream(new byte[6 * MiB]), cts.Token));
        Assert.Contains("larger than target", e.Message);
    }
}
