using System.Buffers;
using KaDeploy.Payloads;
using KaDeploy.Protocol;

namespace KaDeploy.Tests.Protocol;

public class FramingTests
{
    public static TheoryData<ControlMessage> Messages() =>
    [
        new Hello(ProtocolConstants.Version, HelloRole.Client, "sess", "node-ü", "127.0.0.5", 4242),
        new Hello(7, HelloRole.Go, "", "", "", 1),
        new Welcome(3, 2, 10),
        new Refuse("session is full"),
        new Plan(4, 2, "10.0.0.2", 999, [5, 6, 7], PayloadKind.Tar, WireCompression.Zstd, 123456789, new byte[16]),
        new LinkUp(), new Progress(1L << 40, 5), new Done(true, 10, 9, 1234, ""), new Done(false, 0, 0, 0, "disk full"),
        new Release(), new Abort("stop"), new ChildLost(9, "reset"), new DataHello(1, [1, 2, 3], 8, 1 << 20),
        new DataAccept(), new Ping(),
        new Heartbeat(1L << 33, FlowState.HeldBySink), new Heartbeat(0, FlowState.Flowing), new Adopt(12),
        new Reattach(0, "", 30764), new Reattach(3, "198.18.0.4", 4000), new ResumeFailed(3, 1 << 20, "offset no longer held"),
        new Moved("slow: held the buffer full for 5 s"), new DropChild(4, "declared failed: no heartbeat for 3.0 s"),
    ];

    [Theory]
    [MemberData(nameof(Messages))]
    public async Task ControlMessagesRoundTripThroughAChannel(ControlMessage message)
    {
        var pipe = new MemoryStream();
        var channel = new ControlChannel(pipe);
        await channel.SendAsync(message, default);
        pipe.Position = 0;
        var back = await channel.ReceiveAsync(default);
        Assert.NotNull(back);
        Assert.Equal(message.Type, back.Type);
        // Records compare arrays by reference; compare the encodings instead.
        Assert.Equal(Encode(message), Encode(back));
        Assert.Null(await channel.ReceiveAsync(default)); // clean end between frames
    }

    private static byte[] Encode(ControlMessage m)
    {
        var w = new ArrayBufferWriter<byte>();
        ControlCodec.Encode(m, w);
        return w.WrittenSpan.ToArray();
    }

    [Fact]
    public async Task OversizedControlFrameIsRefusedWithoutAllocating()
    {
        var channel = new ControlChannel(new MemoryStream([0xff, 0xff, 0xff, 0x7f, 1, 2, 3]));
        var e = await Assert.ThrowsAsync<ProtocolException>(() => channel.ReceiveAsync(default));
        Assert.Contains("control frame of", e.Message);
    }

    [Fact]
    public async Task TruncatedControlFrameIsAProtocolError()
    {
        var bytes = Encode(new Refuse("a reason"));
        var channel = new ControlChannel(new MemoryStream(bytes[..^2]));
        var e = await Assert.ThrowsAsync<ProtocolException>(() => channel.ReceiveAsync(default));
        Assert.Contains("middle of a frame", e.Message);
    }

    [Fact]
    public void EveryTruncationOfEveryMessageFailsCleanly()
    {
        foreach (ControlMessage m in Messages())
        {
            var body = Encode(m)[4..];
            for (int cut = 0; cut < body.Length; cut++)
            {
                var ex = Record.Exception(() => ControlCodec.Decode(body.AsSpan(0, cut)));
                if (cut > 0 && ex is null) continue; // a prefix can be a valid shorter message only if it has no fields
                if (ex is not null) Assert.IsType<ProtocolException>(ex);
            }
        }
    }

    [Fact]
    public void RandomGarbageNeverEscapesAsAnythingButProtocolException()
    {
        var rng = new Random(42);
        var buffer = new byte[64];
        for (int i = 0; i < 20_000; i++)
        {
            int n = rng.Next(1, buffer.Length);
            rng.NextBytes(buffer.AsSpan(0, n));
            buffer[0] = (byte)rng.Next(0, 16);
            try { ControlCodec.Decode(buffer.AsSpan(0, n)); }
            catch (ProtocolException) { }
        }
    }

    [Fact]
    public void HelloWithBadMagicIsRefused()
    {
        var body = Encode(new Hello(1, HelloRole.Client, "s", "n", "", 1))[4..];
        body[1] ^= 0xff;
        Assert.Contains("bad magic", Assert.Throws<ProtocolException>(() => ControlCodec.Decode(body)).Message);
    }

    [Fact]
    public void DataHeaderRoundTripsAndRejectsBadInput()
    {
        var h = new DataFrameHeader(DataFrameType.Data, 1000, 1L << 33, 0xdeadbeefcafeUL);
        var buf = new byte[DataFrameHeader.Size];
        h.Write(buf);
        Assert.Equal(h, DataFrameHeader.Read(buf));

        var bad = (byte[])buf.Clone();
        bad[0] ^= 1;
        Assert.Contains("magic", Assert.Throws<ProtocolException>(() => DataFrameHeader.Read(bad)).Message);

        new DataFrameHeader(DataFrameType.Data, ProtocolConstants.MaxChunkPayload + 1, 0, 0).Write(bad);
        Assert.Contains("exceeds", Assert.Throws<ProtocolException>(() => DataFrameHeader.Read(bad)).Message);

        new DataFrameHeader(DataFrameType.Data, 10, -5, 0).Write(bad);
        Assert.Contains("negative", Assert.Throws<ProtocolException>(() => DataFrameHeader.Read(bad)).Message);

        new DataFrameHeader((DataFrameType)77, 10, 0, 0).Write(bad);
        Assert.Contains("unknown", Assert.Throws<ProtocolException>(() => DataFrameHeader.Read(bad)).Message);

        new DataFrameHeader(DataFrameType.End, 3, 0, 0).Write(bad);
        Assert.Throws<ProtocolException>(() => DataFrameHeader.Read(bad));
    }

    [Fact]
    public void ChecksumDependsOnOffset()
    {
        var data = new byte[100];
        Assert.NotEqual(DataFrameHeader.ComputeChecksum(data, 0), DataFrameHeader.ComputeChecksum(data, 100));
    }
}
