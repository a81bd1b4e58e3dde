using System.Security.Cryptography;
using KaDeploy.Payloads;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Session;
using KaDeploy.Tests.TestSupport;
using ZstdSharp;

namespace KaDeploy.Tests.Session;

/// <summary>
/// The verification path of a node (<see cref="LocalSink"/>: ring → zstd → digest → sink, then the verdict against the
/// End frame), run on a real ring, the real zstd codec and real digests, with sinks that behave as real ones can: stop
/// reading at their format's end, fail, hang, or give up on their own. Written against the survivors of the
/// <c>session-verify.json</c> Stryker run (tests/README.md, "Mutation testing"); each was checked by planting its bug.
/// </summary>
public class LocalSinkSurvivorTests
{
    public static TheoryData<WireCompression> Compressions => [WireCompression.None, WireCompression.Zstd];

    [Theory]
    [MemberData(nameof(Compressions))]
    public async Task AVerifiedCopyHasNoMessageAndCountsEveryPayloadByte(WireCompression compression)
    {
        var data = RandomNumberGenerator.GetBytes(3 * ProtocolConstants.MaxChunkPayload + 777);
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var sink = new CopySink();
        var local = new LocalSink(ring.Attach("sink"), sink, compression, DigestAlgorithm.Sha256);
        var produce = ProduceAsync(ring, Wire(data, compression), data.Length, DigestAlgorithm.Sha256, PayloadDigest.Of(DigestAlgorithm.Sha256, data));

        var (verified, message) = await local.RunAsync(default).WaitAsync(Eventually.Deadline);
        await produce.WaitAsync(Eventually.Deadline);

        Assert.True(verified, message);
        Assert.Equal("", message); // the Done message of a node that verified: nothing to report
        Assert.Equal(data, sink.Bytes.ToArray());
        Assert.Equal(data.Length, local.PayloadBytes); // the progress line and the Done frame read it
    }

    [Theory]
    [InlineData("garbage")]
    [InlineData("another frame")]
    [InlineData("a skippable frame")]
    public async Task BytesAfterTheEndOfACompressedPayload(string what)
    {
        // Whatever follows the server's zstd frame on the wire is not payload. ZstdSharp's DecompressionStream reads
        // its input to the End frame (it does not stop at the end of a frame), so the trailing bytes reach the decoder:
        // garbage fails it, another frame adds to the payload (its length and digest differ), a skippable frame is
        // skipped, the copy equals the source and is verified. LocalSink's "unexpected data after the end of the
        // compressed payload" check is therefore never reached with this decoder (tests/README.md, equivalent mutants).
        var data = RandomNumberGenerator.GetBytes(2 * ProtocolConstants.MaxChunkPayload + 5);
        byte[] trailing = what switch
        {
            "garbage" => [.. "trailing bytes"u8],
            "another frame" => Wire([1, 2, 3], WireCompression.Zstd),
            _ => [0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 7, 7, 7], // magic 0x184D2A50, 3 bytes of user data
        };
        byte[] wire = [.. Wire(data, WireCompression.Zstd), .. trailing];
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var sink = new CopySink();
        var local = new LocalSink(ring.Attach("sink"), sink, WireCompression.Zstd, DigestAlgorithm.Sha256);
        var produce = ProduceAsync(ring, wire, data.Length, DigestAlgorithm.Sha256, PayloadDigest.Of(DigestAlgorithm.Sha256, data));

        var (verified, message) = await local.RunAsync(default).WaitAsync(Eventually.Deadline);
        await produce.WaitAsync(Eventually.Deadline);

        switch (what)
        {
            case "garbage":
                Assert.False(verified);
                Assert.Equal("ZstdException: Unknown frame descriptor", message);
                break;
            case "another frame":
                Assert.False(verified);
                Assert.Equal($"payload length {data.Length + 3} differs from the server's {data.Length}", message);
                break;
            default:
                Assert.True(verified, message);
                Assert.Equal(data, sink.Bytes.ToArray());
                break;
        }
    }

    [Fact]
    public async Task AnEndFrameNamingAnotherAlgorithmThanThePlanFailsAndNamesBoth()
    {
        var data = RandomNumberGenerator.GetBytes(1000);
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var local = new LocalSink(ring.Attach("sink"), new CopySink(), WireCompression.None, DigestAlgorithm.Sha256);
        // The digest bytes are the planned algorithm's and right: only the End frame's algorithm field is wrong.
        var produce = ProduceAsync(ring, data, data.Length, DigestAlgorithm.XxHash128, PayloadDigest.Of(DigestAlgorithm.Sha256, data));

        var (verified, message) = await local.RunAsync(default).WaitAsync(Eventually.Deadline);
        await produce.WaitAsync(Eventually.Deadline);

        Assert.False(verified);
        Assert.Equal("the End frame carries a xxh128 digest, the plan named sha256", message);
    }

    [Theory]
    [MemberData(nameof(Compressions))]
    public async Task ASinkThatStopsReadingBeforeTheEndIsVerifiedOverTheWholePayload(WireCompression compression)
    {
        // A tar extractor stops at its end marker; the padding after it is still payload, hashed and counted.
        var data = RandomNumberGenerator.GetBytes(4 * ProtocolConstants.MaxChunkPayload + 99);
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var sink = new CopySink(stopAfter: ProtocolConstants.MaxChunkPayload + 10);
        var local = new LocalSink(ring.Attach("sink"), sink, compression, DigestAlgorithm.Blake3);
        var produce = ProduceAsync(ring, Wire(data, compression), data.Length, DigestAlgorithm.Blake3, PayloadDigest.Of(DigestAlgorithm.Blake3, data));

        var (verified, message) = await local.RunAsync(default).WaitAsync(Eventually.Deadline);
        await produce.WaitAsync(Eventually.Deadline);

        Assert.True(verified, message);
        Assert.Equal(data[..(ProtocolConstants.MaxChunkPayload + 10)], sink.Bytes.ToArray());
        Assert.Equal(data.Length, local.PayloadBytes);
    }

    [Theory]
    [MemberData(nameof(Compressions))]
    public async Task AFailingSinkLetsGoOfTheRingSoTheChildrenGoOn(WireCompression compression)
    {
        var data = RandomNumberGenerator.GetBytes(12 * ProtocolConstants.MaxChunkPayload); // three times the ring
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var sink = new FailingSink(new KaDeployException("cannot write /dev/sdz: no space left on device"));
        var local = new LocalSink(ring.Attach("sink"), sink, compression, DigestAlgorithm.Sha256);
        var child = ring.Attach("child");
        var produce = ProduceAsync(ring, compression == WireCompression.Zstd ? Wire(data, compression) : data, data.Length,
            DigestAlgorithm.Sha256, PayloadDigest.Of(DigestAlgorithm.Sha256, data));
        var relayed = DrainCursorAsync(child);

        var (verified, message) = await local.RunAsync(default).WaitAsync(Eventually.Deadline);
        Assert.False(verified);
        Assert.Equal("cannot write /dev/sdz: no space left on device", message); // ours: said as it is, no type name

        // The failed local copy must not hold the stream back: the producer and the child reach the End frame.
        await produce.WaitAsync(Eventually.Deadline);
        Assert.True(await relayed.WaitAsync(Eventually.Deadline) > 0);
    }

    [Theory]
    [MemberData(nameof(Compressions))]
    public async Task AStalledSinkIsLeftBehindUntouchedWithTheRingsReason(WireCompression compression)
    {
        var data = RandomNumberGenerator.GetBytes(12 * ProtocolConstants.MaxChunkPayload);
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var cursor = ring.Attach("local sink");
        var sink = new HangingSink();
        var local = new LocalSink(cursor, sink, compression, DigestAlgorithm.Sha256);
        // Incompressible data: the compressed wire is as long as the data, so it fills the ring as well.
        var produce = ProduceAsync(ring, Wire(data, compression), data.Length, DigestAlgorithm.Sha256, PayloadDigest.Of(DigestAlgorithm.Sha256, data));

        var running = local.RunAsync(default);
        await sink.Hanging.WaitAsync(Eventually.Deadline);
        await Eventually.HoldsAsync(() => ring.Holder() == cursor, "the hung sink to hold the producer back");
        cursor.Evict("took nothing for 30 s"); // what StallWatch does to a consumer that holds everyone back

        var (verified, message) = await running.WaitAsync(Eventually.Deadline);
        Assert.False(verified);
        Assert.Equal("local sink stalled: took nothing for 30 s", message);
        await produce.WaitAsync(Eventually.Deadline); // the ring went on without it

        // The stuck call is left behind, still inside the streams it was given: they must not be freed under it
        // (a disposed decompressor would be used after free). When it wakes up, its next reads are told why.
        sink.Release.SetResult();
        var error = await sink.Failed.WaitAsync(Eventually.Deadline);
        Assert.IsNotType<ObjectDisposedException>(error);
        if (compression == WireCompression.None)
            Assert.Equal("took nothing for 30 s", Assert.IsType<KaDeployException>(error).Message);
    }

    [Fact]
    public async Task TheCallersCancellationEndsTheRunAsCancelled()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var local = new LocalSink(ring.Attach("sink"), new WaitForCancellationSink(), WireCompression.None, DigestAlgorithm.Sha256);
        using var cts = new CancellationTokenSource();
        var running = local.RunAsync(cts.Token);
        cts.Cancel();
        // A cancelled session is not a failed copy: the caller sees its own cancellation, not a verdict.
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => running.WaitAsync(Eventually.Deadline));
    }

    [Fact]
    public async Task ASinkThatCancelsOnItsOwnIsAFailedCopyNamedByItsType()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var local = new LocalSink(ring.Attach("sink"), new FailingSink(new OperationCanceledException("the command timed out")),
            WireCompression.None, DigestAlgorithm.Sha256);
        var (verified, message) = await local.RunAsync(default).WaitAsync(Eventually.Deadline);
        Assert.False(verified);
        Assert.Equal("OperationCanceledException: the command timed out", message);
    }

    [Fact]
    public async Task AnyOtherErrorIsOneLineNamedByItsType()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var local = new LocalSink(ring.Attach("sink"), new FailingSink(new IOException("Input/output error\nat sector 4096")),
            WireCompression.None, DigestAlgorithm.Sha256);
        var (verified, message) = await local.RunAsync(default).WaitAsync(Eventually.Deadline);
        Assert.False(verified);
        Assert.Equal("IOException: Input/output error at sector 4096", message);
    }

    [Theory]
    [InlineData(WireCompression.None, DigestAlgorithm.Sha256)]
    [InlineData(WireCompression.Zstd, DigestAlgorithm.XxHash128)]
    public async Task TheStreamsGivenToTheSinkAreClosedOnceTheVerdictIsIn(WireCompression compression, DigestAlgorithm algorithm)
    {
        // The decompressor's window and the digest's state are freed with the verdict, not left to the collector.
        var data = RandomNumberGenerator.GetBytes(2 * ProtocolConstants.MaxChunkPayload);
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var sink = new CopySink();
        var local = new LocalSink(ring.Attach("sink"), sink, compression, algorithm);
        var produce = ProduceAsync(ring, Wire(data, compression), data.Length, algorithm, PayloadDigest.Of(algorithm, data));
        var (verified, message) = await local.RunAsync(default).WaitAsync(Eventually.Deadline);
        await produce.WaitAsync(Eventually.Deadline);
        Assert.True(verified, message);
        Assert.Throws<ObjectDisposedException>(() => sink.Input!.Read(new byte[16]));
    }

    [Fact]
    public async Task TheVerdictNeverResumesOnTheCallersContext()
    {
        var data = RandomNumberGenerator.GetBytes(1000);
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var sink = new GatedSink();
        var local = new LocalSink(ring.Attach("sink"), sink, WireCompression.None, DigestAlgorithm.Sha256);
        var produce = ProduceAsync(ring, data, data.Length, DigestAlgorithm.Sha256, PayloadDigest.Of(DigestAlgorithm.Sha256, data));
        await produce.WaitAsync(Eventually.Deadline);

        var context = new CountingContext();
        Task<(bool, string)> running;
        SynchronizationContext.SetSynchronizationContext(context);
        try
        {
            running = local.RunAsync(default); // suspends while the sink waits for the gate
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(null);
        }
        sink.Gate.SetResult();
        var (verified, message) = await running.WaitAsync(Eventually.Deadline);
        Assert.True(verified, message);
        Assert.Equal(0, context.Posts);
    }

    // The wire form of the payload: itself, or one zstd frame of it as the server's CompressionStream writes it.
    private static byte[] Wire(byte[] data, WireCompression compression)
    {
        if (compression == WireCompression.None) return data;
        var wire = new MemoryStream();
        using (var zstd = new CompressionStream(wire, 3, 1 << 20, leaveOpen: true)) zstd.Write(data);
        return wire.ToArray();
    }

    private static Task ProduceAsync(RelayRing ring, byte[] wire, long payloadLength, DigestAlgorithm algorithm, byte[] digest) =>
        Task.Run(async () =>
        {
            var writer = new RingWriterStream(ring, default);
            await writer.WriteAsync(wire);
            await writer.CompleteAsync(payloadLength, algorithm, digest, default);
        });

    // A child's sender in miniature: takes every frame to the End; returns the frames taken.
    private static Task<int> DrainCursorAsync(RingCursor cursor) =>
        Task.Run(async () =>
        {
            int frames = 0;
            while (true)
            {
                var frame = await cursor.NextAsync(default);
                frames++;
                bool end = frame.Header.Type == DataFrameType.End;
                cursor.Advance();
                if (end) return frames;
            }
        });

    /// <summary>Copies what it reads; with <c>stopAfter</c>, stops there as a format with an end marker would.</summary>
    private sealed class CopySink(int stopAfter = int.MaxValue) : IPayloadSink
    {
        public MemoryStream Bytes { get; } = new();
        public Stream? Input { get; private set; }
        public string Description => "copy";

        public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
        {
            Input = input;
            var buffer = new byte[10_000];
            while (Bytes.Length < stopAfter)
            {
                int n = await input.ReadAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, stopAfter - Bytes.Length)), cancellationToken);
                if (n == 0) return;
                Bytes.Write(buffer, 0, n);
            }
        }
    }

    private sealed class FailingSink(Exception error) : IPayloadSink
    {
        public string Description => "failing";
        public Task ConsumeAsync(Stream input, CancellationToken cancellationToken) => throw error;
    }

    private sealed class WaitForCancellationSink : IPayloadSink
    {
        public string Description => "waiting";
        public Task ConsumeAsync(Stream input, CancellationToken cancellationToken) => Task.Delay(Timeout.Infinite, cancellationToken);
    }

    /// <summary>Reads everything, but only once the gate opens.</summary>
    private sealed class GatedSink : IPayloadSink
    {
        public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public string Description => "gated";

        public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
        {
            await Gate.Task.ConfigureAwait(false);
            await input.CopyToAsync(Stream.Null, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// A disk that stops answering: reads one byte (so that the streams below hold a frame half read), then hangs in a
    /// call that ignores cancellation until released, then reads on and records how its reads end.
    /// </summary>
    private sealed class HangingSink : IPayloadSink
    {
        private readonly TaskCompletionSource _hanging = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public Task Hanging => _hanging.Task;
        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource<Exception> _failed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public Task<Exception> Failed => _failed.Task;
        public string Description => "hanging";

        public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
        {
            var buffer = new byte[4096];
            await input.ReadExactlyAsync(buffer.AsMemory(0, 1), cancellationToken);
            _hanging.SetResult();
            await Release.Task;
            try
            {
                for (int i = 0; i < 100_000 && await input.ReadAsync(buffer, CancellationToken.None) > 0; i++) { }
                _failed.SetResult(new InvalidOperationException("the abandoned sink read to the end"));
            }
            catch (Exception e)
            {
                _failed.SetResult(e);
            }
        }
    }
}
