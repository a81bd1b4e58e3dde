using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// <see cref="StreamSpool"/>'s survivors of the <c>relay-unit.json</c> Stryker run (tests/README.md, "Mutation
/// testing"): every frame boundary of a file spool found (the binary search's bound), a resume already being served
/// when the spool fails, the End frame flushed to the link, the memory spool's reader named in the ring, the public
/// guards and the memory spool's refusal to be fed. Real ring, real spool file, no mocks.
/// </summary>
public class SpoolSurvivorTests
{
    // Frames of 1, 2, ... n bytes and the End frame: (the frames, the wire offset each starts at).
    private static (byte[][] Frames, long[] Offsets) SmallStream(int n)
    {
        var frames = new List<byte[]>();
        var offsets = new List<long>();
        var payload = new List<byte>();
        long offset = 0;
        for (int i = 1; i <= n; i++)
        {
            var bytes = RandomNumberGenerator.GetBytes(i);
            frames.Add(WireFrames.Data(bytes, offset));
            offsets.Add(offset);
            payload.AddRange(bytes);
            offset += i;
        }
        frames.Add(WireFrames.End(offset, offset, SHA256.HashData(payload.ToArray())));
        offsets.Add(offset);
        return ([.. frames], [.. offsets]);
    }

    [Fact]
    public async Task AFileSpoolFindsAndServesFromEveryFrameBoundary()
    {
        using var dir = new TempDirectory("kd-spool");
        using var deadline = new CancellationTokenSource(Eventually.Deadline); // bounds a broken wait, not a timing check
        using var ring = new RelayRing(16 * RelayRing.SlotSize);
        using var spool = new StreamSpool(dir.Path);
        var feeding = spool.RunAsync(ring.Attach("spool"), deadline.Token);
        var (frames, offsets) = SmallStream(11); // 12 entries: every position of the binary search
        foreach (var f in frames) await WireFrames.PublishAsync(ring, f, deadline.Token);
        await feeding.WaitAsync(deadline.Token);

        for (int i = 0; i < frames.Length; i++)
        {
            Assert.Null(spool.CannotServe(offsets[i]));
            var served = new MemoryStream();
            await spool.ServeAsync(served, offsets[i], deadline.Token);
            Assert.Equal(WireFrames.Concat(frames[i..]), served.ToArray());
        }
    }

    [Fact]
    public async Task AResumeBeingServedWhenTheSpoolFailsFailsWithTheReason()
    {
        using var dir = new TempDirectory("kd-spool");
        using var deadline = new CancellationTokenSource(Eventually.Deadline);
        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        using var spool = new StreamSpool(dir.Path);
        var feeding = spool.RunAsync(ring.Attach("spool"), deadline.Token);
        var first = WireFrames.Data([1, 2, 3], 0);
        await WireFrames.PublishAsync(ring, first, deadline.Token);
        await Eventually.HoldsAsync(() => spool.CannotServe(3) is null, "the spool to hold the first frame");
        var served = new MemoryStream();
        var serving = spool.ServeAsync(served, 0, deadline.Token); // sends the first frame, then waits for the next
        await Eventually.HoldsAsync(() => served.Length == first.Length, "the first frame to be served");

        ring.Fault(new KaDeployException("upstream lost"));
        await feeding.WaitAsync(deadline.Token);
        // Waiting for frames a failed spool will never have would hang the resumed node: it must fail, and say why.
        var e = await Assert.ThrowsAsync<KaDeployException>(() => serving.WaitAsync(deadline.Token));
        Assert.Equal("spool failed: upstream failed: upstream lost", e.Message);
    }

    [Fact]
    public async Task AFileSpoolFlushesTheLinkAfterTheEndFrame()
    {
        using var dir = new TempDirectory("kd-spool");
        using var deadline = new CancellationTokenSource(Eventually.Deadline);
        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        using var spool = new StreamSpool(dir.Path);
        var feeding = spool.RunAsync(ring.Attach("spool"), deadline.Token);
        var (frames, _) = SmallStream(3);
        foreach (var f in frames) await WireFrames.PublishAsync(ring, f, deadline.Token);
        await feeding.WaitAsync(deadline.Token);

        // A link that sends only what it is asked to flush (a buffered socket stream): the End frame must reach the node.
        var wire = new MemoryStream();
        var link = new BufferedStream(wire, 1 << 16);
        await spool.ServeAsync(link, 0, deadline.Token);
        Assert.Equal(WireFrames.Concat(frames), wire.ToArray());
    }

    [Fact]
    public async Task TheMemorySpoolsReaderIsNamedInTheRing()
    {
        // StallWatch and the server's log name the consumer that holds the producer back.
        using var deadline = new CancellationTokenSource(Eventually.Deadline);
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        using var spool = StreamSpool.InRing(ring);
        await WireFrames.PublishAsync(ring, WireFrames.Data([1, 2, 3], 0), deadline.Token);
        var link = new GatedStream();
        var serving = spool.ServeAsync(link, 0, deadline.Token);
        var producing = Task.Run(async () =>
        {
            for (int i = 1; i < 6; i++) await WireFrames.PublishAsync(ring, WireFrames.Data([(byte)i], 2 + i), deadline.Token);
            await WireFrames.PublishAsync(ring, WireFrames.End(8, 8, new byte[32]), deadline.Token);
        });
        await Eventually.HoldsAsync(() => ring.Holder() is not null, "the spool's reader to hold the producer back");
        Assert.Equal("spool reader", ring.Holder()!.Name);
        link.Gate.SetResult();
        await Task.WhenAll(serving, producing).WaitAsync(deadline.Token);
    }

    [Fact]
    public void TheMemorySpoolRefusesToBeFedAndTheGuardsNameTheirArgument()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        using var memory = StreamSpool.InRing(ring);
        // Thrown at the call, not in a task nobody awaits: a caller's mistake is seen where it is made.
        var e = Assert.Throws<InvalidOperationException>(() => { _ = memory.RunAsync(ring.Attach("x"), default); });
        Assert.Equal("a memory spool is the ring itself: nothing to feed", e.Message);

        Assert.Equal("directory", Assert.Throws<ArgumentNullException>(() => new StreamSpool(null!)).ParamName);
        using var dir = new TempDirectory("kd-spool");
        using var file = new StreamSpool(dir.Path);
        Assert.Equal("cursor", Assert.Throws<ArgumentNullException>(() => { _ = file.RunAsync(null!, default); }).ParamName);
        Assert.Equal("link", Assert.Throws<ArgumentNullException>(() => { _ = file.ServeAsync(null!, 0, default); }).ParamName);
    }

    // A link whose writes wait until the test opens the gate (a node that does not read yet).
    private sealed class GatedStream : MemoryStream
    {
        public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await Gate.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            await base.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
        }
    }
}
