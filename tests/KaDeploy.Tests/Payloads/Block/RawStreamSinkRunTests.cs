using System.Security.Cryptography;
using KaDeploy.IO;
using KaDeploy.Payloads.Block;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Payloads.Block;

/// <summary>Issue 10: the file sink fed from a relay ring writes each run of lent frames with one pwritev(2).</summary>
public class RawStreamSinkRunTests
{
    private const int Chunk = ProtocolConstants.MaxChunkPayload;

    [Theory]
    [InlineData(4, 0)]
    [InlineData(64, 999)]
    public async Task AFileGetsEveryByteOfEveryRun(int ringSlots, int tail)
    {
        using var cts = PayloadTestKit.SafetyTimeout(120);
        using var dir = new TempDirectory();
        var data = RandomNumberGenerator.GetBytes(24 * 1024 * 1024 + tail);
        File.WriteAllBytes(dir.File("out"), new byte[40 * 1024 * 1024]); // longer than the payload: truncated
        using var ring = new RelayRing(ringSlots * RelayRing.SlotSize);
        using var reader = new RingReaderStream(ring.Attach("sink"));
        using var digest = new DigestReadStream(reader, DigestAlgorithm.XxHash128);
        var counting = new RunCounter(digest);
        var producing = Task.Run(async () =>
        {
            var writer = new RingWriterStream(ring, cts.Token);
            for (int at = 0; at < data.Length; at += 5 * Chunk + 3)
                await writer.WriteAsync(data.AsMemory(at, Math.Min(5 * Chunk + 3, data.Length - at)), cts.Token);
            await writer.CompleteAsync(data.Length, DigestAlgorithm.XxHash128, PayloadDigest.Of(DigestAlgorithm.XxHash128, data), cts.Token);
        }, cts.Token);

        var sink = new RawStreamSink(dir.File("out"));
        await sink.ConsumeAsync(counting, cts.Token);
        await producing.WaitAsync(cts.Token);

        Assert.Equal(data.Length, sink.BytesWritten);
        Assert.True(data.AsSpan().SequenceEqual(File.ReadAllBytes(dir.File("out"))), "the file differs from the payload");
        Assert.True(counting.Lends > 0 && counting.Lends < counting.Segments, $"{counting.Lends} runs for {counting.Segments} frames");
        Assert.Equal(0, digest.Outstanding);
    }

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
