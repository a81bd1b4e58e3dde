using System.Buffers;
using KaDeploy.Protocol;

namespace KaDeploy.Tests.Protocol;

/// <summary>
/// The Heartbeat's optional retained-from offset (what a node's ring still holds, which the repair planner reads):
/// kept at its bounds (0 and the verified offset), absent when not said, refused outside 0..offset with the values
/// named. Written against the survivors of the 2026-11-27 <c>protocol-fast.json</c> run (tests/README.md).
/// </summary>
public class HeartbeatRetainedFromTests
{
    private static byte[] Body(ControlMessage message)
    {
        var output = new ArrayBufferWriter<byte>();
        ControlCodec.Encode(message, output);
        return output.WrittenSpan[4..].ToArray(); // after the length prefix
    }

    [Theory]
    [InlineData(1000L, 0L)]
    [InlineData(1000L, 1000L)]
    [InlineData(1000L, 999L)]
    [InlineData(0L, 0L)]
    [InlineData(1000L, -1L)]
    public void TheRetainedOffsetSurvivesTheCodecAtItsBounds(long offset, long retained)
    {
        var decoded = Assert.IsType<Heartbeat>(ControlCodec.Decode(Body(new Heartbeat(offset, FlowState.HeldBySink, retained))));
        Assert.Equal(offset, decoded.VerifiedOffset);
        Assert.Equal(FlowState.HeldBySink, decoded.State);
        Assert.Equal(retained, decoded.RetainedFrom);
    }

    [Fact]
    public void AHeartbeatThatSaysNothingRetainedCarriesNoField()
    {
        // The server's heartbeats leave it out: 8 bytes shorter than one that says it.
        Assert.Equal(Body(new Heartbeat(5, FlowState.Flowing, 0)).Length - 8, Body(new Heartbeat(5, FlowState.Flowing)).Length);
    }

    [Fact]
    public void ARetainedOffsetOutsideZeroToTheVerifiedOffsetIsRefusedWithBoth()
    {
        var after = Assert.Throws<ProtocolException>(() => ControlCodec.Decode(Body(new Heartbeat(1000, FlowState.Flowing, 1001))));
        Assert.Equal("heartbeat says it holds from offset 1001, outside 0..1000", after.Message);

        var body = Body(new Heartbeat(1000, FlowState.Flowing, 0));
        body.AsSpan(body.Length - 8).Fill(0xFF); // -1 in either byte order: the encoder never writes a negative one
        var negative = Assert.Throws<ProtocolException>(() => ControlCodec.Decode(body));
        Assert.Equal("heartbeat says it holds from offset -1, outside 0..1000", negative.Message);
    }
}
