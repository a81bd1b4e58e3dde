using System.Security.Cryptography;
using KaDeploy.IO;
using KaDeploy.Payloads.Exec;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.Payloads.Block;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Payloads.Exec;

/// <summary>
/// Issue 10: the command sink fed from a relay ring takes runs of lent frames and writes each with one writev(2)
/// into a real pipe read by a real command. A slot must never be reused before the pipe holds its bytes.
/// </summary>
public class CommandSinkRunTests
{
    private const int Chunk = ProtocolConstants.MaxChunkPayload;

    [Theory]
    [InlineData(4, 0)]      // the smallest ring: every slot recycles many times while the pipe is full
    [InlineData(64, 4321)]  // frames of every run, and a short last one
    public async Task ASlowCommandBehindASmallRingGetsEveryByte(int ringSlots, int tail)
    {
        using var cts = PayloadTestKit.SafetyTimeout(120);
        using var dir = new TempDirectory();
        var data = RandomNumberGenerator.GetBytes(24 * 1024 * 1024 + tail);
        using var ring = new RelayRing(ringSlots * RelayRing.SlotSize);
        using var reader = new RingReaderStream(ring.Attach("sink"));
        using var digest = new DigestReadStream(reader, DigestAlgorithm.XxHash128);
        var counting = new RunCounter(digest);
        var producing = ProduceAsync(ring, data, cts.Token);

        // The command reads nothing at first, then slowly: the pipe fills and the sink waits on it with frames lent.
        var sink = new CommandSink($"sleep 0.3; dd bs=4096 status=none > {dir.File("out")}");
        await sink.ConsumeAsync(counting, cts.Token);
        await producing.WaitAsync(cts.Token);

        Assert.Equal(data.Length, sink.BytesWritten);
        Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(dir.File("out"))), "the command's copy differs from the payload");
        Assert.Equal(PayloadDigest.Of(DigestAlgorithm.XxHash128, data), digest.Digest());
        Assert.True(counting.Lends > 0 && counting.Lends < counting.Segments, $"{counting.Lends} runs for {counting.Segments} frames");
        Assert.Equal(0, digest.Outstanding);
    }

    [Fact]
    public async Task ACommandThatExitsEarlyIsReportedFromARing()
    {
        using var cts = PayloadTestKit.SafetyTimeout(60);
        var data = RandomNumberGenerator.GetBytes(8 * 1024 * 1024);
        using var ring = new RelayRing(16 * RelayRing.SlotSize);
        using var reader = new RingReaderStream(ring.Attach("sink"));
        using var digest = new DigestReadStream(reader, DigestAlgorithm.XxHash128);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
        var producing = ProduceAsync(ring, data, stop.Token);
        var e = await Assert.ThrowsAsync<KaDeployException>(() => new CommandSink("head -c 10 > /dev/null").ConsumeAsync(digest, cts.Token));
        Assert.Contains("stopped reading its input", e.Message);
        Assert.False(cts.IsCancellationRequested);
        reader.Dispose(); // the sink's cursor goes: the producer is no longer held back
        await stop.CancelAsync();
        await Quietly(producing);
    }

    [Fact]
    public async Task ACommandThatExitsLeavingAChildOnItsStdinIsReportedFromARing()
    {
        using var cts = PayloadTestKit.SafetyTimeout(60);
        using var dir = new TempDirectory();
        string pidFile = dir.File("pid");
        var data = RandomNumberGenerator.GetBytes(8 * 1024 * 1024);
        using var ring = new RelayRing(16 * RelayRing.SlotSize);
        using var reader = new RingReaderStream(ring.Attach("sink"));
        using var digest = new DigestReadStream(reader, DigestAlgorithm.XxHash128);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cts.Token);
        var producing = ProduceAsync(ring, data, stop.Token);
        var e = await Assert.ThrowsAsync<KaDeployException>(() =>
            new CommandSink($"exec 3<&0; sleep 120 <&3 3<&- >/dev/null 2>&1 & echo $! > {pidFile}; exit 0").ConsumeAsync(digest, cts.Token));
        Assert.Contains("stopped reading its input", e.Message);
        int pid = int.Parse(File.ReadAllText(pidFile).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            Assert.True(Directory.Exists($"/proc/{pid}"), "the sink only reported after the pipe's last holder had gone");
        }
        finally
        {
            try { System.Diagnostics.Process.GetProcessById(pid).Kill(); } catch (ArgumentException) { } catch (InvalidOperationException) { }
            reader.Dispose();
            await stop.CancelAsync();
            await Quietly(producing);
        }
    }

    [Fact]
    public async Task CancellationKillsACommandThatDoesNotReadFromARing()
    {
        using var safety = PayloadTestKit.SafetyTimeout(60);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(safety.Token);
        using var dir = new TempDirectory();
        string pidFile = dir.File("pid");
        var data = RandomNumberGenerator.GetBytes(8 * 1024 * 1024);
        using var ring = new RelayRing(16 * RelayRing.SlotSize);
        using var reader = new RingReaderStream(ring.Attach("sink"));
        using var digest = new DigestReadStream(reader, DigestAlgorithm.XxHash128);
        var producing = ProduceAsync(ring, data, cts.Token);
        var consuming = new CommandSink($"echo $$ > {pidFile}; exec sleep 60").ConsumeAsync(digest, cts.Token);
        // Cancel once the command runs and the pipe is full (the ring held back: the sink waits with a run lent).
        await Eventually.HoldsAsync(() => File.Exists(pidFile) && File.ReadAllText(pidFile).EndsWith('\n') && ring.Holder() is not null, "a full pipe");
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => consuming);
        Assert.False(safety.IsCancellationRequested);
        int pid = int.Parse(File.ReadAllText(pidFile).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        Assert.False(Directory.Exists($"/proc/{pid}") && !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ", StringComparison.Ordinal), "the command outlived the cancelled sink");
        await Quietly(producing);
    }

    // The producer ends either way once the sink is gone: it finishes (nobody holds it back), or it is cancelled.
    private static async Task Quietly(Task producing)
    {
        try
        {
            await producing.WaitAsync(Eventually.Deadline);
        }
        catch (OperationCanceledException)
        {
        }
    }

    private static Task ProduceAsync(RelayRing ring, byte[] data, CancellationToken cancellationToken) => Task.Run(async () =>
    {
        var writer = new RingWriterStream(ring, cancellationToken);
        for (int at = 0; at < data.Length; at += 3 * Chunk + 77) // writes that do not fall on frame boundaries
            await writer.WriteAsync(data.AsMemory(at, Math.Min(3 * Chunk + 77, data.Length - at)), cancellationToken);
        await writer.CompleteAsync(data.Length, DigestAlgorithm.XxHash128, PayloadDigest.Of(DigestAlgorithm.XxHash128, data), cancellationToken);
    }, cancellationToken);

    /// <summary>Passes runs through and counts them: proves the sink took the run path.</summary>
    private sealed class RunCounter(DigestReadStream inner) : SequentialReadStream, ISegmentRunReader
    {
        public int Lends { get; private set; }
        public long Segments { get; private set; }
        public bool LendsRuns => inner.LendsRuns;
        public int Outstanding => inner.Outstanding;

        public async ValueTask<int> LendAsync(Memory<ReadOnlyMemory<byte>> segments, CancellationToken cancellationToken)
        {
            int n = await inner.LendAsync(segments, cancellationToken);
            if (n > 0) Lends++;
            Segments += n;
            return n;
        }

        public void Return(int count) => inner.Return(count);

        public override int Read(byte[] buffer, int offset, int count) => throw new InvalidOperationException("the sink copied instead of lending runs");
    }
}
