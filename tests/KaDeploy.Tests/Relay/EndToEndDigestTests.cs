using System.IO.Hashing;
using System.Security.Cryptography;
using KaDeploy.Payloads;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Session;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

public class EndToEndDigestTests
{
    public static TheoryData<DigestAlgorithm> Algorithms => [DigestAlgorithm.Sha256, DigestAlgorithm.Blake3, DigestAlgorithm.XxHash128];

    [Fact]
    public void EachAlgorithmGivesItsKnownDigest()
    {
        byte[] data = [.. "abc"u8];
        Assert.Equal(SHA256.HashData(data), PayloadDigest.Of(DigestAlgorithm.Sha256, data));
        // BLAKE3 of the empty input, from the reference implementation's test vectors.
        Assert.Equal("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            Convert.ToHexStringLower(PayloadDigest.Of(DigestAlgorithm.Blake3, [])));
        var xxh = PayloadDigest.Of(DigestAlgorithm.XxHash128, data);
        Assert.Equal(XxHash128.Hash(data), xxh[..16]);
        Assert.Equal(new byte[16], xxh[16..]);
    }

    [Theory]
    [MemberData(nameof(Algorithms))]
    public async Task ANodeVerifiesItsCopyWithThePlannedAlgorithm(DigestAlgorithm algorithm)
    {
        var data = RandomNumberGenerator.GetBytes(5 * ProtocolConstants.MaxChunkPayload + 1234);
        var (verified, message, got) = await RunLocalSinkAsync(data, algorithm, PayloadDigest.Of(algorithm, data), algorithm);
        Assert.True(verified, message);
        Assert.Equal(data, got);
    }

    [Theory]
    [MemberData(nameof(Algorithms))]
    public async Task ANodeRejectsACopyWhoseDigestDiffers(DigestAlgorithm algorithm)
    {
        var data = RandomNumberGenerator.GetBytes(3 * ProtocolConstants.MaxChunkPayload);
        var other = (byte[])data.Clone();
        other[^1] ^= 1; // the server hashed one bit differently from what reached the sink
        var (verified, message, _) = await RunLocalSinkAsync(data, algorithm, PayloadDigest.Of(algorithm, other), algorithm);
        Assert.False(verified);
        Assert.Contains($"{algorithm.Name()} mismatch", message);
    }

    [Fact]
    public async Task ANodeRejectsAnEndFrameOfAnotherAlgorithmThanThePlan()
    {
        var data = RandomNumberGenerator.GetBytes(1000);
        var (verified, message, _) = await RunLocalSinkAsync(data, DigestAlgorithm.Sha256,
            PayloadDigest.Of(DigestAlgorithm.Sha256, data), DigestAlgorithm.XxHash128);
        Assert.False(verified);
        Assert.Contains("plan named xxh128", message);
    }

    [Fact]
    public void ThePlanCarriesTheAlgorithmAndUnknownOnesAreRefused()
    {
        var plan = new Plan(1, 0, "", 1, [], PayloadKind.Raw, WireCompression.None, -1, new byte[16], DigestAlgorithm.Blake3);
        var output = new System.Buffers.ArrayBufferWriter<byte>();
        ControlCodec.Encode(plan, output);
        var body = output.WrittenSpan[4..].ToArray(); // after the length prefix
        Assert.Equal(DigestAlgorithm.Blake3, Assert.IsType<Plan>(ControlCodec.Decode(body)).Digest);
        body[^(1 + 2 + 4)] = 9; // the digest byte; the (empty) stream key's length and the stream id follow it
        Assert.Throws<ProtocolException>(() => ControlCodec.Decode(body));
        var end = new byte[DataFrameHeader.EndPayloadSize];
        end[16] = 9;
        Assert.Throws<ProtocolException>(() => EndOfStream.Parse(end));
    }

    // Frames data into a ring with an End frame carrying (endAlgorithm, digest) and runs a node's local sink on it.
    private static async Task<(bool Verified, string Message, byte[] Consumed)> RunLocalSinkAsync(
        byte[] data, DigestAlgorithm endAlgorithm, byte[] digest, DigestAlgorithm planned)
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var sink = new MemorySink();
        var local = new LocalSink(ring.Attach("sink"), sink, WireCompression.None, planned);
        var writer = new RingWriterStream(ring, default);
        var produce = Task.Run(async () =>
        {
            await writer.WriteAsync(data);
            await writer.CompleteAsync(data.Length, endAlgorithm, digest, default);
        });
        var (verified, message) = await local.RunAsync(default).WaitAsync(Eventually.Deadline);
        await produce;
        return (verified, message, sink.Bytes.ToArray());
    }

    private sealed class MemorySink : IPayloadSink
    {
        public MemoryStream Bytes { get; } = new();
        public string Description => "memory";
        public Task ConsumeAsync(Stream input, CancellationToken cancellationToken) => input.CopyToAsync(Bytes, cancellationToken);
    }
}
