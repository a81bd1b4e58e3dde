using KaDeploy.Payloads;
using KaDeploy.Payloads.Block;

namespace KaDeploy.Tests.Payloads.Block;

public class RawPayloadTests
{
    [Fact]
    public async Task RawFileRoundTripsAndTruncatesALongerTarget()
    {
        using var dir = new TempDirectory();
        byte[] data = PayloadTestKit.RandomBytes(9 * 1024 * 1024 + 3, seed: 21);
        File.WriteAllBytes(dir.File("src"), data);
        File.WriteAllBytes(dir.File("dst"), new byte[20 * 1024 * 1024]);
        using var cts = PayloadTestKit.SafetyTimeout();

        var source = new RawFileSource(dir.File("src"));
        Assert.Equal(PayloadKind.Raw, source.Kind);
        var sink = new RawStreamSink(dir.File("dst"));
        await PayloadTestKit.TransferAsync(source, sink, cts.Token);
        Assert.Equal(data.Length, sink.BytesWritten);
        Assert.Equal(data, File.ReadAllBytes(dir.File("dst")));
    }

    [Fact]
    public async Task MissingDeviceIsNotCreated()
    {
        var e = await Assert.ThrowsAsync<KaDeployException>(() =>
            new RawStreamSink("/dev/kadeploy-no-such-disk").ConsumeAsync(new MemoryStream([1]), CancellationToken.None));
        Assert.Contains("no such device", e.Message);
        Assert.False(File.Exists("/dev/kadeploy-no-such-disk"));
    }

    [Fact]
    public void MissingSourceFailsAtOnce()
    {
        var e = Assert.Throws<KaDeployException>(() => new BlockDeviceSource("/nonexistent/disk.img"));
        Assert.Contains("/nonexistent/disk.img", e.Message);
    }
}
