using KaDeploy.Payloads;
using KaDeploy.Payloads.Block;

namespace KaDeploy.Tests.Payloads.Block;

public class BlockMapTests
{
    private const int MiB = 1024 * 1024;

    [Fact]
    public async Task RandomImageRoundTripsThroughAFile()
    {
        using var dir = new TempDirectory();
        byte[] image = PayloadTestKit.RandomBytes(10 * MiB + 1000, seed: 1); // not a multiple of the block size
        File.WriteAllBytes(dir.File("src.img"), image);
        using var cts = PayloadTestKit.SafetyTimeout();

        var source = new BlockDeviceSource(dir.File("src.img"));
        Assert.Equal(PayloadKind.BlockMap, source.Kind);
        Assert.False(source.IsBlockDevice);
        var encoded = new MemoryStream();
        await source.WriteToAsync(encoded, cts.Token);
        Assert.True(encoded.Length <= source.EstimatedLength);
        Assert.Equal(image.Length, source.DataBytesSent);

        encoded.Position = 0;
        var sink = new BlockDeviceSink(dir.File("dst.img"));
        await sink.ConsumeAsync(encoded, cts.Token);
        Assert.Equal(image, File.ReadAllBytes(dir.File("dst.img")));
        Assert.Equal(encoded.Length, encoded.Position); // the sink stops at END
    }

    [Fact]
    public async Task ZeroHeavyImageEncodesSmallAndLeavesHolesInTheTarget()
    {
        using var dir = new TempDirectory();
        // 64 MiB written out in full (no holes: zero detection, not SEEK_HOLE, must find the zeros), with data at
        // the start, in the middle across a read boundary, in one lone sector, and in an unaligned tail.
        byte[] image = new byte[64 * MiB + 777];
        PayloadTestKit.RandomBytes(100_000, 2).CopyTo(image, 0);
        PayloadTestKit.RandomBytes(300_000, 3).CopyTo(image, 4 * MiB - 150_000);
        image[40 * MiB + 5] = 0x42;
        PayloadTestKit.RandomBytes(777, 4).CopyTo(image, 64 * MiB);
        File.WriteAllBytes(dir.File("src.img"), image);
        using var cts = PayloadTestKit.SafetyTimeout();

        var encoded = new MemoryStream();
        await new BlockDeviceSource(dir.File("src.img")).WriteToAsync(encoded, cts.Token);
        Assert.True(encoded.Length < MiB, $"encoded {encoded.Length} bytes");

        encoded.Position = 0;
        await new BlockDeviceSink(dir.File("dst.img")).ConsumeAsync(encoded, cts.Token);
        Assert.Equal(image, File.ReadAllBytes(dir.File("dst.img")));
        long allocated = PayloadTestKit.AllocatedBytes(dir.File("dst.img"));
        Assert.True(allocated < 4 * MiB, $"target has {allocated} bytes allocated; it should be sparse");
    }

    [Fact]
    public async Task SparseSourceIsEncodedWithoutItsHoles()
    {
        using var dir = new TempDirectory();
        string path = dir.File("sparse.img");
        byte[] data = PayloadTestKit.RandomBytes(256 * 1024, 5);
        using (var f = new FileStream(path, FileMode.Create))
        {
            f.SetLength(8L << 30); // 8 GiB of hole: reading it would take seconds, skipping it takes none
            f.Position = 3L << 30;
            f.Write(data);
        }
        var source = new BlockDeviceSource(path);
        Assert.True(source.EstimatedLength < 2 * MiB, $"estimate {source.EstimatedLength}");
        using var cts = PayloadTestKit.SafetyTimeout();
        var encoded = new MemoryStream();
        await source.WriteToAsync(encoded, cts.Token);
        Assert.Equal(data.Length, source.DataBytesSent);

        encoded.Position = 0;
        var reader = new BlockMapReader(encoded);
        BlockMapHeader header = await reader.ReadHeaderAsync(cts.Token);
        Assert.Equal(8L << 30, header.TotalLength);
        BlockMapRun? run = await reader.ReadNextRunAsync(cts.Token);
        Assert.Equal(new BlockMapRun(3L << 30, data.Length), run);
        byte[] read = new byte[data.Length];
        await reader.ReadRunDataAsync(read, cts.Token);
        Assert.Equal(data, read);
        Assert.Null(await reader.ReadNextRunAsync(cts.Token));
    }

    [Fact]
    public async Task EmptyImageRoundTrips()
    {
        using var dir = new TempDirectory();
        File.WriteAllBytes(dir.File("src.img"), []);
        var encoded = new MemoryStream();
        await new BlockDeviceSource(dir.File("src.img")).WriteToAsync(encoded, CancellationToken.None);
        Assert.Equal(BlockMapFormat.HeaderLength + BlockMapFormat.EndRecordLength, encoded.Length);
        encoded.Position = 0;
        await new BlockDeviceSink(dir.File("dst.img")).ConsumeAsync(encoded, CancellationToken.None);
        Assert.Equal(0, new FileInfo(dir.File("dst.img")).Length);
    }

    [Fact]
    public async Task WriterRefusesRunsOutOfOrder()
    {
        var writer = new BlockMapWriter(new MemoryStream(), totalLength: 1 * MiB, blockSize: 4096);
        await writer.WriteHeaderAsync(CancellationToken.None);
        await writer.WriteRunAsync(8192, new byte[4096], CancellationToken.None);
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => writer.WriteRunAsync(4096, new byte[4096], CancellationToken.None).AsTask());
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => writer.WriteRunAsync(MiB, new byte[4096], CancellationToken.None).AsTask());
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => writer.WriteRunAsync(20000, new byte[4096], CancellationToken.None).AsTask());
    }
}
