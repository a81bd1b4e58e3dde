using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// A frame is checked before anyone sees it: what the receiver publishes is what the child links
/// forward and what the local sink writes, so a bad frame must never reach the ring at all.
/// </summary>
public class FrameReceiverTests
{
    private static readonly byte[] Payload = RandomNumberGenerator.GetBytes(3000);

    /// <summary>What each consumer of the ring got after the receiver ran over <paramref name="wire"/>.</summary>
    private sealed record Outcome(Exception? ReceiverError, long Published, byte[] Forwarded, Exception? ForwardError, byte[] Written, Exception? WriteError);

    private static async Task<Outcome> ReceiveAsync(byte[] wire)
    {
        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        var childCursor = ring.Attach("child");
        var localCursor = ring.Attach("local");
        var receiverError = await Record.ExceptionAsync(() => new FrameReceiver(new MemoryStream(wire), ring).RunAsync(default));
        long published = ring.Published;
        // The consumers run after the receiver has stopped: whatever reached the ring, they see.
        var forwarded = new MemoryStream();
        var forwardError = await Record.ExceptionAsync(() => new ChildSender(childCursor, forwarded).RunAsync(default));
        var written = new MemoryStream();
        using var reader = new RingReaderStream(localCursor);
        var writeError = await Record.ExceptionAsync(() => reader.CopyToAsync(written));
        return new Outcome(receiverError, published, forwarded.ToArray(), forwardError, written.ToArray(), writeError);
    }

    [Fact]
    public async Task AnIntactStreamReachesEveryConsumer()
    {
        var frames = WireFrames.Stream(Payload, 1000);
        var o = await ReceiveAsync(WireFrames.Concat(frames));
        Assert.Null(o.ReceiverError);
        Assert.Equal(frames.Count, o.Published);
        Assert.Equal(WireFrames.Concat(frames), o.Forwarded);
        Assert.Equal(Payload, o.Written);
    }

    [Theory]
    [InlineData(DataFrameHeader.Size)]        // first payload byte
    [InlineData(DataFrameHeader.Size + 999)]  // last payload byte
    [InlineData(20)]                          // the checksum field itself
    public async Task ACorruptedFrameIsNeverPublishedForwardedOrWritten(int at)
    {
        var frames = WireFrames.Stream(Payload, 1000);
        frames[1][at] ^= 0x01; // one bit flipped in transit, in the second frame
        var o = await ReceiveAsync(WireFrames.Concat(frames));
        Assert.Contains("checksum mismatch", Assert.IsType<ProtocolException>(o.ReceiverError).Message);
        Assert.Equal(1, o.Published);
        Assert.Equal(frames[0], o.Forwarded);          // the child got the good frame and nothing after it
        Assert.IsType<KaDeployException>(o.ForwardError); // and was told the upstream failed
        Assert.Equal(Payload[..1000], o.Written);      // the sink wrote the good bytes and nothing after them
        Assert.IsType<KaDeployException>(o.WriteError);
    }

    [Fact]
    public async Task ACorruptedEndFrameIsNeverPublished()
    {
        var frames = WireFrames.Stream(Payload, 1000);
        frames[^1][DataFrameHeader.Size + 20] ^= 0x80; // the digest the End frame promises
        var o = await ReceiveAsync(WireFrames.Concat(frames));
        Assert.IsType<ProtocolException>(o.ReceiverError);
        Assert.Equal(frames.Count - 1, o.Published);
        Assert.Equal(WireFrames.Concat(frames.Take(frames.Count - 1)), o.Forwarded);
        Assert.NotNull(o.ForwardError); // the child never sees an End frame, so it can never verify
        Assert.NotNull(o.WriteError);
    }

    [Fact]
    public async Task EveryByteFlippedAnywhereIsCaughtOrHarmless()
    {
        var payload = Payload[..60];
        var frames = WireFrames.Stream(payload, 20);
        var wire = WireFrames.Concat(frames);
        for (int at = 0; at < wire.Length; at++)
        {
            var bad = (byte[])wire.Clone();
            bad[at] ^= 0x5A;
            var o = await ReceiveAsync(bad);
            // Whatever got through is the true payload: a prefix of it, and all of it only with an intact End.
            Assert.True(payload.AsSpan().StartsWith(o.Written), $"flip at {at}: wrong bytes reached the sink");
            Assert.True(wire.AsSpan().StartsWith(o.Forwarded) || o.ReceiverError is null,
                $"flip at {at}: a bad frame was forwarded");
            if (o.ReceiverError is null)
            {
                // Only the reserved header bytes are not checked; the frame's content is untouched then.
                const int dataFrame = DataFrameHeader.Size + 20;
                int inFrame = at < 3 * dataFrame ? at % dataFrame : at - 3 * dataFrame;
                Assert.True(inFrame is 6 or 7 or (>= 28 and < 32), $"flip at {at} went unnoticed");
                Assert.Equal(payload, o.Written);
            }
        }
    }

    [Fact]
    public async Task AFrameAtTheWrongOffsetIsNeverPublished()
    {
        var frames = WireFrames.Stream(Payload, 1000);
        (frames[1], frames[2]) = (frames[2], frames[1]); // reordered: each frame is intact, its place is not
        var o = await ReceiveAsync(WireFrames.Concat(frames));
        Assert.Contains("expected 1000", Assert.IsType<ProtocolException>(o.ReceiverError).Message);
        Assert.Equal(1, o.Published);
        Assert.Equal(Payload[..1000], o.Written);
    }

    [Fact]
    public async Task AReplayedFrameIsNeverPublished()
    {
        var frames = WireFrames.Stream(Payload, 1000);
        frames.Insert(2, frames[1]); // duplicated
        var o = await ReceiveAsync(WireFrames.Concat(frames));
        Assert.IsType<ProtocolException>(o.ReceiverError);
        Assert.Equal(2, o.Published);
        Assert.Equal(Payload[..2000], o.Written);
    }

    [Fact]
    public async Task AnEndFrameThatDisagreesWithWhatArrivedIsNeverPublished()
    {
        var frames = WireFrames.Stream(Payload, 1000, wireLength: Payload.Length + 1);
        var o = await ReceiveAsync(WireFrames.Concat(frames));
        Assert.Contains("stream ended at", Assert.IsType<ProtocolException>(o.ReceiverError).Message);
        Assert.Equal(frames.Count - 1, o.Published);
    }

    [Fact]
    public async Task AStreamCutAtAnyByteNeverCompletes()
    {
        var wire = WireFrames.Concat(WireFrames.Stream(Payload[..50], 20));
        for (int cut = 0; cut < wire.Length; cut++)
        {
            var o = await ReceiveAsync(wire[..cut]);
            Assert.True(o.ReceiverError is ProtocolException, $"cut at {cut}: {o.ReceiverError?.GetType().Name ?? "completed"}");
            Assert.NotNull(o.ForwardError); // no End frame was forwarded
            Assert.NotNull(o.WriteError);   // the sink saw no end of stream
        }
    }
}
