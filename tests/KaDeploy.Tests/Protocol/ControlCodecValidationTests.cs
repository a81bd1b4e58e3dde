using System.Buffers;
using System.Buffers.Binary;
using KaDeploy.Payloads;
using KaDeploy.Protocol;

namespace KaDeploy.Tests.Protocol;

/// <summary>
/// Each refusal of the control codec and channel, with its message, at its boundary (the largest value
/// accepted, the next one refused): written against the mutants Stryker left alive in <c>Protocol/</c>.
/// </summary>
public class ControlCodecValidationTests
{
    private static byte[] Body(ControlMessage m)
    {
        var w = new ArrayBufferWriter<byte>();
        ControlCodec.Encode(m, w);
        return w.WrittenSpan[4..].ToArray();
    }

    private static string Refused(byte[] body) => Assert.Throws<ProtocolException>(() => ControlCodec.Decode(body)).Message;

    private static Plan APlan(int children = 2, PayloadKind kind = PayloadKind.Tar, WireCompression compression = WireCompression.None,
        DigestAlgorithm digest = DigestAlgorithm.Sha256) =>
        new(1, 0, "198.18.0.1", 4000, [.. Enumerable.Range(2, children)], kind, compression, 100, [1, 2], digest);

    [Fact]
    public void TheLengthPrefixCountsTheTypeAndBody()
    {
        var w = new ArrayBufferWriter<byte>();
        ControlCodec.Encode(new Refuse("abc"), w);
        w.Write<byte>([0xEE]); // a second frame may follow in the same buffer
        ControlCodec.Encode(new Adopt(7), w);
        ReadOnlySpan<byte> all = w.WrittenSpan;
        Assert.Equal(1 + 2 + 3, BinaryPrimitives.ReadInt32LittleEndian(all));
        Assert.Equal((byte)ControlType.Refuse, all[4]);
        Assert.Equal(1 + 4, BinaryPrimitives.ReadInt32LittleEndian(all[11..]));
        Assert.Equal(new Adopt(7), ControlCodec.Decode(all[15..]));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(20)]
    [InlineData(255)]
    public void AnUnknownMessageTypeIsRefused(byte type)
    {
        Assert.Equal($"unknown control message type {type}", Refused([type, 0, 0, 0, 0]));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    public void AnUnknownHelloRoleIsRefused(byte role)
    {
        byte[] body = Body(new Hello(ProtocolConstants.Version, HelloRole.Client, "s", "n", "a", 1));
        int at = 1 + ProtocolConstants.Magic.Length + 2;
        Assert.Equal((byte)HelloRole.Client, body[at]);
        body[at] = role;
        Assert.Equal($"unknown hello role {role}", Refused(body));
    }

    [Fact]
    public void ADataHelloWithABadMagicIsRefused()
    {
        byte[] body = Body(new DataHello(2, [1], 3, 4));
        body[1 + ProtocolConstants.Magic.Length - 1] ^= 1;
        Assert.Equal("not a ka-deploy peer (bad magic)", Refused(body));
    }

    [Fact]
    public void APlanNamesAtMost64Children()
    {
        var plan = APlan(children: 64);
        Assert.Equal(plan.ChildIds, ((Plan)ControlCodec.Decode(Body(plan))).ChildIds);
        Assert.Equal("plan names 65 children, more than any arity allows", Refused(Body(APlan(children: 65))));
    }

    [Fact]
    public void APlanWithAnUnknownKindCompressionOrDigestIsRefused()
    {
        Assert.Equal("unknown payload kind 0", Refused(Body(APlan(kind: 0))));
        Assert.Equal("unknown payload kind 5", Refused(Body(APlan(kind: (PayloadKind)5))));
        Assert.Equal("unknown compression 2", Refused(Body(APlan(compression: (WireCompression)2))));
        Assert.Equal("unknown digest algorithm 0", Refused(Body(APlan(digest: 0))));
        Assert.Equal("unknown digest algorithm 5", Refused(Body(APlan(digest: (DigestAlgorithm)5))));
        foreach (PayloadKind k in Enum.GetValues<PayloadKind>()) Assert.Equal(k, ((Plan)ControlCodec.Decode(Body(APlan(kind: k)))).Kind);
    }

    [Fact]
    public void AHeartbeatAtANegativeOffsetOrInAnUnknownStateIsRefused()
    {
        Assert.Equal("heartbeat at negative offset -1", Refused(Body(new Heartbeat(-1, FlowState.Flowing))));
        Assert.Equal("unknown flow state 5", Refused(Body(new Heartbeat(0, (FlowState)5))));
        Assert.Equal(new Heartbeat(0, FlowState.Complete), ControlCodec.Decode(Body(new Heartbeat(0, FlowState.Complete))));
    }

    [Fact]
    public void AStringThatIsNotUtf8IsRefused()
    {
        Assert.Equal("control string is not valid UTF-8", Refused([(byte)ControlType.Refuse, 2, 0, 0xC3, 0x28]));
    }

    [Fact]
    public void AControlStringHoldsAtMost4096Bytes()
    {
        string longest = new('x', 4096);
        Assert.Equal(longest, ((Refuse)ControlCodec.Decode(Body(new Refuse(longest)))).Reason);
        Assert.Throws<ArgumentException>(() => Body(new Refuse(longest + "y")));
    }

    [Fact]
    public void ABlobLongerThanItsLengthFieldIsNotEncoded()
    {
        Assert.Equal(ushort.MaxValue, ((DataHello)ControlCodec.Decode(Body(new DataHello(2, new byte[ushort.MaxValue], 1, 0)))).LinkKey.Length);
        Assert.Throws<OverflowException>(() => Body(new DataHello(2, new byte[ushort.MaxValue + 1], 1, 0)));
    }

    [Fact]
    public async Task AFrameOfTheLargestAllowedLengthIsReadAndTheNextIsRefused()
    {
        // Refuse: u8 type | u16 length | string; the frame is 3 + n bytes.
        int n = ProtocolConstants.MaxControlFrame - 3;
        byte[] frame = new byte[4 + ProtocolConstants.MaxControlFrame];
        BinaryPrimitives.WriteInt32LittleEndian(frame, ProtocolConstants.MaxControlFrame);
        frame[4] = (byte)ControlType.Refuse;
        BinaryPrimitives.WriteUInt16LittleEndian(frame.AsSpan(5), (ushort)n);
        frame.AsSpan(7).Fill((byte)'r');
        var ok = await new ControlChannel(new MemoryStream(frame)).ReceiveAsync(default);
        Assert.Equal(n, Assert.IsType<Refuse>(ok).Reason.Length);

        byte[] tooLong = new byte[4 + ProtocolConstants.MaxControlFrame + 1];
        BinaryPrimitives.WriteInt32LittleEndian(tooLong, ProtocolConstants.MaxControlFrame + 1);
        var e = await Assert.ThrowsAsync<ProtocolException>(() => new ControlChannel(new MemoryStream(tooLong)).ReceiveAsync(default));
        Assert.Equal($"control frame of {ProtocolConstants.MaxControlFrame + 1} bytes (limit {ProtocolConstants.MaxControlFrame})", e.Message);
    }

    [Fact]
    public async Task AnEmptyFrameIsRefusedAndAOneByteFrameIsRead()
    {
        var e = await Assert.ThrowsAsync<ProtocolException>(() => new ControlChannel(new MemoryStream([0, 0, 0, 0, 9])).ReceiveAsync(default));
        Assert.Equal("control frame of 0 bytes (limit 65536)", e.Message);
        Assert.IsType<Ping>(await new ControlChannel(new MemoryStream([1, 0, 0, 0, (byte)ControlType.Ping])).ReceiveAsync(default));
    }

    [Fact]
    public async Task SeveralFramesOfGrowingSizeAreReadInOrderFromOneStream()
    {
        // The receive buffer grows; a frame that fits in it must not be read with a stale length.
        var pipe = new MemoryStream();
        var channel = new ControlChannel(pipe);
        ControlMessage[] sent = [new Refuse(new string('a', 300)), new Ping(), new Refuse(new string('b', 1000)), new Abort("c")];
        foreach (ControlMessage m in sent) await channel.SendAsync(m, default);
        pipe.Position = 0;
        foreach (ControlMessage m in sent) Assert.Equal(m, await channel.ReceiveAsync(default));
        Assert.Null(await channel.ReceiveAsync(default));
    }

    [Fact]
    public async Task ExpectNamesWhatCameInstead()
    {
        async Task<Exception> Expect(params ControlMessage[] messages)
        {
            var pipe = new MemoryStream();
            var channel = new ControlChannel(pipe);
            foreach (ControlMessage m in messages) await channel.SendAsync(m, default);
            pipe.Position = 0;
            return await Assert.ThrowsAnyAsync<Exception>(() => channel.ExpectAsync<Welcome>(default));
        }
        Assert.Equal("refused: full", (await Expect(new Refuse("full"))).Message);
        Assert.Equal("aborted: stop", (await Expect(new Abort("stop"))).Message);
        Exception other = await Expect(new Ping());
        Assert.IsType<ProtocolException>(other);
        Assert.Equal("got Ping while Welcome was expected", other.Message);
        Exception closed = await Expect();
        Assert.IsType<ProtocolException>(closed);
        Assert.Equal("peer closed the connection while Welcome was expected", closed.Message);
    }
}
