using System.Security.Cryptography;
using KaDeploy.Payloads.Exec;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.Payloads.Block;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Payloads.Exec;

/// <summary>
/// A command sink fed from the ring (issue 10): the ring's pages are spliced into the command's pipe, so a slot may be
/// reused only once the command has read what was spliced from it. Real rings, real pipes, real commands.
/// </summary>
public class SplicedCommandSinkTests
{
    // A ring of four slots (the producer reuses each slot every four frames) and a command that takes 64 KiB at a
    // time with a pause between: whatever the sink spliced stays in the pipe long after it left the sink.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ASlowCommandReadsExactBytesFromASmallRing(bool throughDigest)
    {
        using var cts = PayloadTestKit.SafetyTimeout(60);
        using var dir = new TempDirectory();
        byte[] data = PayloadTestKit.RandomBytes(40 * ProtocolConstants.MaxChunkPayload + 12_345, seed: 7);
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var reader = new RingReaderStream(ring.Attach("local sink"));
        Stream input = throughDigest ? new DigestReadStream(reader) : reader;
        var producing = ProduceAsync(ring, data, cts.Token);
        string output = dir.File("out");
        var sink = new CommandSink($"while head -c 65536 > {dir.File("chunk")} && [ -s {dir.File("chunk")} ]; do cat {dir.File("chunk")} >> {output}; sleep 0.01; done");
        await sink.ConsumeAsync(input, cts.Token);
        await producing;
        Assert.Equal(data.Length, sink.BytesWritten);
        Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(output)), "the command read other bytes than were sent");
        Assert.NotNull(reader.End);
        if (input is DigestReadStream digest) Assert.Equal(SHA256.HashData(data), digest.Digest());
        input.Dispose();
    }

    // Held frames are capped at half the window (here 2 of 4): past the cap the reader says so (-1) instead of waiting
    // for a frame, but the End frame, which lends nothing, is still taken, so that a stream whose bytes all sit in the
    // pipe ends there and does not wait on its command.
    [Fact]
    public async Task AFullHoldSaysSoAndStillTakesTheEndFrame()
    {
        using var cts = PayloadTestKit.SafetyTimeout(30);
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var cursor = ring.Attach("local sink");
        using var reader = new RingReaderStream(cursor);
        IO.ISegmentReader lender = reader;
        byte[] data = PayloadTestKit.RandomBytes(3 * ProtocolConstants.MaxChunkPayload, seed: 3);
        await ProduceAsync(ring, data, cts.Token); // 3 Data frames and the End frame: the whole window
        var segments = new ReadOnlyMemory<byte>[16];
        Assert.Equal(2, lender.ReadHeldSegments(segments, cts.Token));
        Assert.Equal(-1, lender.ReadHeldSegments(segments, cts.Token));
        lender.ReleaseHeld(ProtocolConstants.MaxChunkPayload - 1);
        Assert.Equal(0, cursor.Position); // a frame partly read stays held
        lender.ReleaseHeld(1);
        Assert.Equal(1, cursor.Position);
        Assert.Equal(1, lender.ReadHeldSegments(segments, cts.Token));
        Assert.True(data.AsSpan(2 * ProtocolConstants.MaxChunkPayload).SequenceEqual(segments[0].Span));
        Assert.Equal(0, lender.ReadHeldSegments(segments, cts.Token)); // no room left, but the End frame is next
        Assert.NotNull(reader.End);
        lender.ReleaseHeld(2 * ProtocolConstants.MaxChunkPayload);
        Assert.Equal(4, cursor.Position); // the End frame goes with the bytes before it
    }

    [Fact]
    public async Task ARingFedCommandThatExitsEarlyIsReportedNotHung()
    {
        using var cts = PayloadTestKit.SafetyTimeout(30);
        using var ring = new RelayRing(64 * RelayRing.SlotSize);
        using var producer = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
        var producing = ProduceEndlesslyAsync(ring, producer.Token);
        using var reader = new RingReaderStream(ring.Attach("local sink"));
        var e = await Assert.ThrowsAsync<KaDeployException>(() => new CommandSink("head -c 10 > /dev/null").ConsumeAsync(reader, cts.Token));
        Assert.Contains("stopped reading its input", e.Message);
        Assert.False(cts.IsCancellationRequested);
        reader.Dispose();
        await producer.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => producing);
    }

    [Fact]
    public async Task ARingFedCommandThatLeavesAChildOnItsStdinIsReportedNotHung()
    {
        using var cts = PayloadTestKit.SafetyTimeout(30);
        using var dir = new TempDirectory();
        string pidFile = dir.File("pid");
        using var ring = new RelayRing(64 * RelayRing.SlotSize);
        using var producer = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
        var producing = ProduceEndlesslyAsync(ring, producer.Token);
        using var reader = new RingReaderStream(ring.Attach("local sink"));
        var e = await Assert.ThrowsAsync<KaDeployException>(() =>
            new CommandSink($"exec 3<&0; sleep 120 <&3 3<&- >/dev/null 2>&1 & echo $! > {pidFile}; exit 0").ConsumeAsync(reader, cts.Token));
        Assert.Contains("stopped reading its input", e.Message);
        int pid = int.Parse(File.ReadAllText(pidFile).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        try { System.Diagnostics.Process.GetProcessById(pid).Kill(); } catch (ArgumentException) { } catch (InvalidOperationException) { }
        reader.Dispose();
        await producer.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => producing);
    }

    private static Task ProduceAsync(RelayRing ring, byte[] data, CancellationToken ct) => Task.Run(async () =>
    {
        var writer = new RingWriterStream(ring, ct);
        // Uneven writes: frames are cut at the chunk size whatever the writes are.
        for (int at = 0; at < data.Length;)
        {
            int n = Math.Min(data.Length - at, 100_003);
            await writer.WriteAsync(data.AsMemory(at, n), ct);
            at += n;
        }
        await writer.CompleteAsync(data.Length, DigestAlgorithm.Sha256, SHA256.HashData(data), ct);
    }, ct);

    private static Task ProduceEndlesslyAsync(RelayRing ring, CancellationToken ct) => Task.Run(async () =>
    {
        var writer = new RingWriterStream(ring, ct);
        var chunk = new byte[ProtocolConstants.MaxChunkPayload];
        while (true)
        {
            ct.ThrowIfCancellationRequested(); // a ring with no consumer left never makes the writer wait
            await writer.WriteAsync(chunk, ct);
        }
    }, ct);
}
