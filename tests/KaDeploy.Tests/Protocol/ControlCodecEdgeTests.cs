using System.Buffers;
using KaDeploy.Payloads;
using KaDeploy.Protocol;

namespace KaDeploy.Tests.Protocol;

/// <summary>
/// The control codec's refusals that no test named exactly: how many trailing bytes, a stream key of the wrong
/// size, a message type the encoder does not know.
/// </summary>
public class ControlCodecEdgeTests
{
    private sealed record Unknown() : ControlMessage((ControlType)200);

    private static byte[] Body(ControlMessage m)
    {
        var w = new ArrayBufferWriter<byte>();
        ControlCodec.Encode(m, w);
        return w.WrittenSpan[4..].ToArray();
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void TrailingBytesAreCounted(int extra)
    {
        byte[] welcome = [.. Body(new Welcome(1, 2, 3)), .. new byte[extra]];
        Assert.Equal($"Welcome message has {extra} trailing bytes", Assert.Throws<ProtocolException>(() => ControlCodec.Decode(welcome)).Message);
        byte[] ping = [.. Body(new Ping()), .. new byte[extra]];
        Assert.Equal($"Ping message has {extra} trailing bytes", Assert.Throws<ProtocolException>(() => ControlCodec.Decode(ping)).Message);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(16)]
    [InlineData(31)]
    [InlineData(33)]
    public void APlanStreamKeyIsNoneOr32Bytes(int size)
    {
        var plan = new Plan(1, 0, "198.18.0.1", 4000, [2], PayloadKind.Tar, WireCompression.None, 100, [1, 2], DigestAlgorithm.Sha256, new byte[size], 5);
        Assert.Equal($"plan carries a {size}-byte stream key", Assert.Throws<ProtocolException>(() => ControlCodec.Decode(Body(plan))).Message);
    }

    [Fact]
    public void AMessageTheEncoderDoesNotKnowIsAnArgumentError()
    {
        var e = Assert.Throws<ArgumentException>(() => ControlCodec.Encode(new Unknown(), new ArrayBufferWriter<byte>()));
        Assert.Equal("message", e.ParamName);
        Assert.StartsWith("cannot encode Unknown", e.Message);
    }
}
