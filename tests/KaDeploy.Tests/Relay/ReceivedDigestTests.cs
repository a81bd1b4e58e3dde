using System.Security.Cryptography;
using KaDeploy.Payloads;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Session;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// A node's end-to-end digest is computed by its receivers as frames are checked (<see cref="ReceivedDigest"/>), not
/// by the sink. It must still cover every payload byte exactly once, in order, across every link the node had, and a
/// wrong End frame must still fail the node.
/// </summary>
public class ReceivedDigestTests
{
    private const int Chunk = ProtocolConstants.MaxChunkPayload;

    // The frames of `payload` (full-size chunks) and an End frame promising `digest` (xxh128).
    private static List<byte[]> Frames(byte[] payload, byte[] digest)
    {
        var frames = new List<byte[]>();
        for (int at = 0; at < payload.Length; at += Chunk)
            frames.Add(WireFrames.Data(payload.AsSpan(at, Math.Min(Chunk, payload.Length - at)), at));
        var body = new byte[DataFrameHeader.EndPayloadSize];
        new EndOfStream(payload.Length, payload.Length, DigestAlgorithm.XxHash128, digest).Write(body);
        frames.Add(WireFrames.Frame(DataFrameType.End, body, payload.Length, DataFrameHeader.ComputeChecksum(body, payload.Length)));
        return frames;
    }

    // Runs one receiver per link (each link's bytes given), resuming at the ring's offset as a client does, and the
    // node's local sink on the same ring with the receivers' digest; returns the sink's verdict and what it wrote.
    private static async Task<(bool Verified, string Message, byte[] Written)> NodeAsync(byte[][] links, bool digestEveryLink = true)
    {
        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        using var received = new ReceivedDigest(DigestAlgorithm.XxHash128);
        var sink = new MemorySink();
        var local = new LocalSink(ring.Attach("local sink"), sink, WireCompression.None, DigestAlgorithm.XxHash128, received);
        var verdict = local.RunAsync(default);
        for (int i = 0; i < links.Length; i++)
        {
            var receiver = new FrameReceiver(new MemoryStream(links[i]), ring, ring.NextOffset, faultRingOnError: false)
            {
                Digest = digestEveryLink || i == 0 ? received : null,
            };
            var error = await Record.ExceptionAsync(() => receiver.RunAsync(default));
            if (i < links.Length - 1) Assert.IsType<ProtocolException>(error); // a link cut between frames
            else if (error is not null) ring.Fault(error);
        }
        var (verified, message) = await verdict.WaitAsync(TimeSpan.FromMinutes(2));
        return (verified, message, sink.Bytes.ToArray());
    }

    [Fact]
    public async Task EveryFrameIsDigestedOnceAcrossResumedLinks()
    {
        var data = RandomNumberGenerator.GetBytes(20 * Chunk + 777);
        var frames = Frames(data, PayloadDigest.Of(DigestAlgorithm.XxHash128, data));
        // Link 1 brings 3 frames and a cut frame header, link 2 resumes at frame 3 and brings 14 more (one receive
        // holds up to 16 slots), link 3 the rest and the End frame.
        byte[][] links =
        [
            [.. WireFrames.Concat(frames[..3]), .. frames[3].AsSpan(0, 10)],
            [.. WireFrames.Concat(frames[3..17]), .. frames[17].AsSpan(0, 5000)],
            WireFrames.Concat(frames[17..]),
        ];
        var (verified, message, written) = await NodeAsync(links);
        Assert.True(verified, message);
        Assert.Equal(data, written);
    }

    [Fact]
    public async Task AWrongEndDigestFailsTheNode()
    {
        var data = RandomNumberGenerator.GetBytes(5 * Chunk + 1);
        var digest = PayloadDigest.Of(DigestAlgorithm.XxHash128, data);
        digest[3] ^= 1;
        var (verified, message, written) = await NodeAsync([WireFrames.Concat(Frames(data, digest))]);
        Assert.False(verified);
        Assert.Contains("xxh128 mismatch", message);
        Assert.Equal(data, written); // the bytes were all there; only the verdict says the copy is not the server's
    }

    [Fact]
    public async Task ALinkWhoseFramesWereNotDigestedFailsTheNode()
    {
        // A resumed receiver that was not given the digest: the frames it brought are in the copy but not in the digest.
        var data = RandomNumberGenerator.GetBytes(6 * Chunk);
        var frames = Frames(data, PayloadDigest.Of(DigestAlgorithm.XxHash128, data));
        var (verified, message, _) = await NodeAsync([WireFrames.Concat(frames[..2]), WireFrames.Concat(frames[2..])], digestEveryLink: false);
        Assert.False(verified);
        Assert.Contains("digest covers", message);
    }

    [Fact]
    public void AFrameOutOfPlaceIsRefused()
    {
        using var d = new ReceivedDigest(DigestAlgorithm.XxHash128);
        d.Append(0, new byte[100]);
        Assert.Throws<ProtocolException>(() => d.Append(0, new byte[100]));   // the same frame twice
        Assert.Throws<ProtocolException>(() => d.Append(200, new byte[100])); // a frame skipped
        d.Append(100, new byte[100]);
        Assert.Equal(200, d.NextOffset);
        Assert.Equal(PayloadDigest.Of(DigestAlgorithm.XxHash128, new byte[200]), d.Finish());
    }

    private sealed class MemorySink : IPayloadSink
    {
        public MemoryStream Bytes { get; } = new();
        public string Description => "memory";
        public Task ConsumeAsync(Stream input, CancellationToken cancellationToken) => input.CopyToAsync(Bytes, cancellationToken);
    }
}
