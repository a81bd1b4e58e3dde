using System.Buffers;
using KaDeploy.Payloads;
using KaDeploy.Protocol;

namespace KaDeploy.Tests.Protocol;

public class FramingTests
{
    private static readonly ControlMessage[] Samples =
    [
        new Hello(ProtocolConstants.Version, HelloRole.Client, "sess", "node-ü", "127.0.0.5", 4242),
        new Hello(7, HelloRole.Go, "", "", "", 1),
        new Welcome(3, 2, 10),
        new Refuse("session is full"),
        new Plan(4, 2, "10.0.0.2", 999, [5, 6, 7], PayloadKind.Tar, WireCompression.Zstd, 123456789, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6]),
        new Plan(-1, 0, "", 65535, [], PayloadKind.BlockMap, WireCompression.None, -1, [], DigestAlgorithm.Blake3),
        new Plan(3, 1, "10.0.0.1", 7, [], PayloadKind.Raw, WireCompression.None, 0, [1], DigestAlgorithm.XxHash128,
            [.. Enumerable.Range(1, 32).Select(i => (byte)i)], 0xDEADBEEF), // keyed: the stream key and id
        new LinkUp(), new Progress(1L << 40, 5), new Done(true, 10L << 33, 9L << 32 | 7, 1234567890123, "verified, but slowly"),
        new Done(false, 0, 0, 0, "disk full"),
        new Release(), new Abort("stop"), new ChildLost(9, "reset"), new DataHello(1, [1, 2, 3], 8, 1L << 41 | 3),
        new DataAccept(), new Ping(),
        new Heartbeat(1L << 33, FlowState.HeldBySink), new Heartbeat(0, FlowState.Flowing), new Adopt(12),
        new Reattach(0, "", 30764), new Reattach(3, "198.18.0.4", 4000), new ResumeFailed(3, 1 << 20, "offset no longer held"),
        new Moved("slow: held the buffer full for 5 s"), new DropChild(4, "declared failed: no heartbeat for 3.0 s"),
    ];

    public static TheoryData<ControlMessage> Messages() => new(Samples);

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
        // Field by field against the values the test wrote, not against a second encoding by the code
        // under test: an encoder that drops a field and a decoder that agrees would pass that.
        AssertSameFields(message, back);
        Assert.Null(await channel.ReceiveAsync(default)); // clean end between frames
    }

    [Fact]
    public void EveryFieldOfEveryMessageTypeHasASampleWhereItIsNotTheDefault()
    {
        // An encoder that writes 0 (or "") for a field is only caught by a sample in which that field is not 0.
        var byType = Samples.GroupBy(m => m.GetType()).ToList();
        Assert.Equal(Enum.GetValues<ControlType>().Length, byType.Count); // every message type has a sample
        foreach (var samples in byType)
            foreach (var p in Fields(samples.Key))
                Assert.True(samples.Any(m => p.GetValue(m) switch
                {
                    null or "" or Array { Length: 0 } or false => false,
                    object v when v.GetType().IsValueType => !v.Equals(Activator.CreateInstance(v.GetType())),
                    _ => true,
                }), $"{samples.Key.Name}.{p.Name} has its default value in every sample");
    }

    private static IEnumerable<System.Reflection.PropertyInfo> Fields(Type t) =>
        t.GetProperties().Where(p => p.Name is not ("Type" or "EqualityContract"));

    /// <summary>Every public field of <paramref name="actual"/> equals the original's; arrays element by element.</summary>
    internal static void AssertSameFields(ControlMessage expected, ControlMessage actual)
    {
        Assert.Equal(expected.GetType(), actual.GetType());
        Assert.Equal(expected.Type, actual.Type);
        foreach (var p in Fields(expected.GetType()))
        {
            object? e = p.GetValue(expected), a = p.GetValue(actual);
            if (e is Array ea)
                Assert.True(a is Array aa && ea.Cast<object>().SequenceEqual(aa.Cast<object>()), $"{expected.GetType().Name}.{p.Name} differs");
            else
                Assert.True(Equals(e, a), $"{expected.GetType().Name}.{p.Name}: sent {e}, decoded {a}");
        }
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
    public void EveryTruncationOfEveryMessageThrows()
    {
        // Every field is fixed in order and size (strings carry their length), so no strict prefix of a
        // message is a message: each one must be refused, never padded out with zeros.
        foreach (ControlMessage m in Samples)
        {
            var body = Encode(m)[4..];
            for (int cut = 0; cut < body.Length; cut++)
            {
                var ex = Record.Exception(() => ControlCodec.Decode(body.AsSpan(0, cut)));
                Assert.True(ex is ProtocolException, $"{m.Type} cut to {cut} of {body.Length} bytes: {(ex is null ? "decoded" : ex.GetType().Name)}");
            }
        }
    }

    [Fact]
    public async Task EveryTruncationOfEveryFramedMessageOnAChannelThrows()
    {
        foreach (ControlMessage m in Samples)
        {
            var frame = Encode(m);
            for (int cut = 1; cut < frame.Length; cut++)
            {
                var channel = new ControlChannel(new MemoryStream(frame[..cut]));
                await Assert.ThrowsAsync<ProtocolException>(() => channel.ReceiveAsync(default));
            }
            // A frame whose length prefix claims fewer bytes than the message holds is refused too.
            var shortened = (byte[])frame.Clone();
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(shortened, frame.Length - 5);
            if (frame.Length > 5)
                await Assert.ThrowsAsync<ProtocolException>(() => new ControlChannel(new MemoryStream(shortened[..^1])).ReceiveAsync(default));
        }
    }

    [Fact]
    public void TrailingBytesAfterAnyMessageAreRefused()
    {
        foreach (ControlMessage m in Samples)
        {
            byte[] body = [.. Encode(m)[4..], 0];
            Assert.Contains("trailing", Assert.Throws<ProtocolException>(() => ControlCodec.Decode(body)).Message);
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
