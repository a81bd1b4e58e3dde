using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// The spool's edges that only repair sessions reached (Stryker's "no coverage"): a reader of the file spool that
/// is ahead of the feed and waits for it, a feed that fails and what a resume then hears, the file spool's answer
/// for an offset not yet produced, a spool directory that cannot be used, and what each spool says of itself.
/// </summary>
public class StreamSpoolEdgeTests
{
    private const int Chunk = ProtocolConstants.MaxChunkPayload;

    private static byte[] Frame(DataFrameType type, byte[] payload, long offset) =>
        WireFrames.Frame(type, payload, offset, DataFrameHeader.ComputeChecksum(payload, offset));

    [Fact]
    public async Task AFileSpoolReaderAheadOfTheFeedWaitsForTheFramesAndGetsThemAll()
    {
        using var dir = new TempDirectory("kd-spool");
        using var deadline = new CancellationTokenSource(Eventually.Deadline); // bounds a broken wait, not a timing check
        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        using var spool = new StreamSpool(dir.Path);
        var feeding = spool.RunAsync(ring.Attach("spool"), deadline.Token);

        byte[][] frames = [Frame(DataFrameType.Data, [1, 2, 3], 0), Frame(DataFrameType.Data, [4, 5], 3), WireFrames.End(5, 5, SHA256.HashData(new byte[] { 1, 2, 3, 4, 5 }))];
        Assert.Null(spool.CannotServe(0));  // where the stream stands now: served once produced
        Assert.Equal("offset 2 is not a frame boundary of the stream", spool.CannotServe(2));
        var served = new MemoryStream();
        var serving = spool.ServeAsync(served, 0, deadline.Token); // nothing produced yet: it waits
        await WireFrames.PublishAsync(ring, frames[0], deadline.Token);
        await Eventually.HoldsAsync(() => spool.CannotServe(3) is null, "the spool to hold the first frame");
        Assert.Equal("offset 4 is not a frame boundary of the stream", spool.CannotServe(4));
        await WireFrames.PublishAsync(ring, frames[1], deadline.Token);
        await WireFrames.PublishAsync(ring, frames[2], deadline.Token);
        await Task.WhenAll(feeding, serving).WaitAsync(deadline.Token);

        Assert.Equal(WireFrames.Concat(frames), served.ToArray());
        Assert.Null(spool.CannotServe(5)); // the End frame alone is still servable
        Assert.Equal("offset 6 is not a frame boundary of the stream", spool.CannotServe(6)); // complete: nothing more will come
        var fromEnd = new MemoryStream();
        await spool.ServeAsync(fromEnd, 5, deadline.Token);
        Assert.Equal(frames[2], fromEnd.ToArray());
    }

    [Fact]
    public async Task AFailedFeedStopsTheSpoolAndEveryResumeHearsWhy()
    {
        using var dir = new TempDirectory("kd-spool");
        using var deadline = new CancellationTokenSource(Eventually.Deadline);
        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        using var spool = new StreamSpool(dir.Path);
        var feeding = spool.RunAsync(ring.Attach("spool"), deadline.Token);
        await WireFrames.PublishAsync(ring, Frame(DataFrameType.Data, [1, 2, 3], 0), deadline.Token);
        await Eventually.HoldsAsync(() => spool.CannotServe(3) is null, "the spool to hold the first frame");
        var waiting = spool.ServeAsync(new MemoryStream(), 3, deadline.Token); // waits for a frame that will never come

        ring.Fault(new KaDeployException("upstream lost"));
        await feeding.WaitAsync(deadline.Token); // the spool's failure does not fail the session
        var e = await Assert.ThrowsAsync<KaDeployException>(() => waiting.WaitAsync(deadline.Token));
        Assert.Equal("spool failed: upstream failed: upstream lost", e.Message);
        Assert.Equal("spool failed: upstream failed: upstream lost", spool.CannotServe(0));
        Assert.Equal("spool failed: upstream failed: upstream lost", spool.CannotServe(3));
    }

    [Fact]
    public void ASpoolDirectoryThatCannotBeUsedIsNamed()
    {
        using var dir = new TempDirectory("kd-spool");
        string missing = dir.Sub("not-there");
        var e = Assert.Throws<KaDeployException>(() => new StreamSpool(missing));
        Assert.StartsWith($"--spool {missing}: ", e.Message);
        Assert.Throws<ArgumentNullException>(() => new StreamSpool(null!));
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public async Task EachSpoolSaysWhatItIsAndOnlyTheFileSpoolIsFed()
    {
        using var dir = new TempDirectory("kd-spool");
        using (var file = new StreamSpool(dir.Path))
        {
            Assert.Equal($"file in {dir.Path}", file.Description);
            Assert.True(file.NeedsFeed);
            Assert.Single(Directory.GetFiles(dir.Path, ".ka-deploy-spool-*")); // hidden, in the directory given
        }
        Assert.Empty(Directory.GetFiles(dir.Path)); // deleted when closed

        // 4 window + 28 retained slots of 64 KiB: 2 MiB.
        using var ring = new RelayRing(4 * RelayRing.SlotSize, 28 * RelayRing.SlotSize);
        using var memory = StreamSpool.InRing(ring);
        Assert.Equal("memory (the last 2 MiB of the stream, kept in the relay buffer)", memory.Description);
        Assert.False(memory.NeedsFeed);
        await Assert.ThrowsAsync<InvalidOperationException>(() => memory.RunAsync(ring.Attach("x"), default));
        Assert.Throws<ArgumentNullException>(() => StreamSpool.InRing(null!));
    }

    [Fact]
    public async Task TheMemorySpoolNamesWhatItHoldsWhenAnOffsetIsTooOldOrNotYetThere()
    {
        // 4 + 12 slots (1 MiB); 20 frames produced and drained: offset 0 is overwritten.
        using var ring = new RelayRing(4 * RelayRing.SlotSize, 12 * RelayRing.SlotSize);
        using var spool = StreamSpool.InRing(ring);
        var writer = new RingWriterStream(ring, default);
        var child = ring.Attach("child");
        var draining = Task.Run(async () => { for (int i = 0; i < 20; i++) { await child.NextAsync(default); child.Advance(); } });
        await writer.WriteAsync(RandomNumberGenerator.GetBytes(20 * Chunk));
        await draining.WaitAsync(Eventually.Deadline);
        long next = 20L * Chunk;
        Assert.Equal($"offset 0 is older than the spool holds (the last 1 MiB, up to {next}; use --spool DIR to keep the whole stream)", spool.CannotServe(0));
        Assert.Null(spool.CannotServe(next)); // where it stands: the next frame
        Assert.Equal($"offset {next + 1} is not in the stream (it stands at {next})", spool.CannotServe(next + 1));
    }

    [Fact]
    public void AFileSpoolKeepsEverythingAMemorySpoolItsRingLessOneFrame()
    {
        using var dir = new TempDirectory("kd-spool");
        using var file = new StreamSpool(dir.Path);
        Assert.Null(file.KeepsLastBytes);
        // 8 slots of window and 24 of retention: 31 full frames survive the end; the slot being overwritten may not.
        using var clear = new RelayRing(8 * RelayRing.SlotSize, 24 * RelayRing.SlotSize);
        using var memory = StreamSpool.InRing(clear);
        Assert.Equal((long)(clear.SlotCount - 1) * ProtocolConstants.MaxChunkPayload, memory.KeepsLastBytes);
        Assert.Equal(31L * ProtocolConstants.MaxChunkPayload, memory.KeepsLastBytes);
        // A sealed ring spends twice the memory per frame (wire bytes and plaintext): the same bytes keep half the frames.
        using var sealedRing = new RelayRing(8 * RelayRing.SlotSize, 24 * RelayRing.SlotSize, sealedFrames: true);
        using var sealedSpool = StreamSpool.InRing(sealedRing);
        Assert.True(sealedSpool.KeepsLastBytes < memory.KeepsLastBytes / 2 + ProtocolConstants.MaxChunkPayload);
    }
}
