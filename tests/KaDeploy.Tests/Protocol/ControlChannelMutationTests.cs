using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Security;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Protocol;

/// <summary>
/// <c>ControlChannel</c> at its edges: the frame-length bounds clear and sealed (exactly at the limit and one
/// past it), receive buffers that grow, a send buffer reused between frames, the typed receive's refusals,
/// and what disposing releases. Written to kill the mutants Stryker left alive in <c>ControlChannel.cs</c>.
/// </summary>
public class ControlChannelMutationTests
{
    private static byte[] Encode(ControlMessage m)
    {
        var w = new ArrayBufferWriter<byte>();
        ControlCodec.Encode(m, w);
        return w.WrittenSpan.ToArray();
    }

    /// <summary>A raw frame: length prefix saying <paramref name="length"/>, then <paramref name="body"/>.</summary>
    private static byte[] Frame(int length, byte[] body)
    {
        var f = new byte[4 + body.Length];
        BinaryPrimitives.WriteInt32LittleEndian(f, length);
        body.CopyTo(f, 4);
        return f;
    }

    /// <summary>A DataHello whose link key fills its frame to exactly <paramref name="frameLength"/> bytes after the prefix.</summary>
    private static DataHello HelloOfFrameLength(int frameLength)
    {
        // type 1 + magic 8 + version 2 + key length 2 + key + node 4 + offset 8
        var key = new byte[frameLength - 25];
        RandomNumberGenerator.Fill(key);
        var m = new DataHello(ProtocolConstants.Version, key, 3, 1L << 40);
        Assert.Equal(4 + frameLength, Encode(m).Length);
        return m;
    }

    /// <summary>Both ends' ciphers of one keyed connection (opener seals, acceptor opens).</summary>
    private static (ControlCipher Opener, ControlCipher Acceptor) Ciphers(PresharedKey key)
    {
        var no = RandomNumberGenerator.GetBytes(32);
        var na = RandomNumberGenerator.GetBytes(32);
        return (ControlCipher.Derive(key, no, na, isOpener: true), ControlCipher.Derive(key, no, na, isOpener: false));
    }

    private static void AssertSameHello(DataHello expected, ControlMessage? got)
    {
        var h = Assert.IsType<DataHello>(got);
        Assert.Equal(expected.Version, h.Version);
        Assert.Equal(expected.LinkKey, h.LinkKey);
        Assert.Equal(expected.NodeId, h.NodeId);
        Assert.Equal(expected.ResumeOffset, h.ResumeOffset);
    }

    [Fact]
    public async Task AClearFrameOfExactlyTheLimitIsReadAndOneByteMoreIsRefused()
    {
        var largest = HelloOfFrameLength(ProtocolConstants.MaxControlFrame);
        AssertSameHello(largest, await new ControlChannel(new MemoryStream(Encode(largest))).ReceiveAsync(default));

        var over = Frame(ProtocolConstants.MaxControlFrame + 1, new byte[ProtocolConstants.MaxControlFrame + 1]);
        var e = await Assert.ThrowsAsync<ProtocolException>(() => new ControlChannel(new MemoryStream(over)).ReceiveAsync(default));
        Assert.Equal($"control frame of {ProtocolConstants.MaxControlFrame + 1} bytes (limit {ProtocolConstants.MaxControlFrame})", e.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(int.MinValue)]
    public async Task AClearFrameWithoutEvenATypeByteIsRefused(int length)
    {
        var e = await Assert.ThrowsAsync<ProtocolException>(() => new ControlChannel(new MemoryStream(Frame(length, [1, 2, 3]))).ReceiveAsync(default));
        Assert.Equal($"control frame of {length} bytes (limit {ProtocolConstants.MaxControlFrame})", e.Message);
    }

    [Fact]
    public async Task AOneByteClearFrameIsAMessage()
    {
        Assert.Equal(new LinkUp(), await new ControlChannel(new MemoryStream(Frame(1, [(byte)ControlType.LinkUp]))).ReceiveAsync(default));
    }

    [Fact]
    public async Task ASealedFrameOfExactlyTheLimitPlusItsTagIsReadAndOneByteMoreIsRefused()
    {
        using var key = PresharedKey.Generate();
        var (opener, acceptor) = Ciphers(key);
        var largest = HelloOfFrameLength(ProtocolConstants.MaxControlFrame);
        var wire = new MemoryStream();
        await new ControlChannel(wire, opener).SendAsync(largest, default);
        Assert.Equal(4 + ProtocolConstants.MaxControlFrame + ControlCipher.TagSize, wire.Length);
        wire.Position = 0;
        AssertSameHello(largest, await new ControlChannel(wire, acceptor).ReceiveAsync(default));

        int over = ProtocolConstants.MaxControlFrame + ControlCipher.TagSize + 1;
        var e = await Assert.ThrowsAsync<ProtocolException>(() => new ControlChannel(new MemoryStream(Frame(over, new byte[over])), acceptor).ReceiveAsync(default));
        Assert.Equal($"control frame of {over} bytes (limit {ProtocolConstants.MaxControlFrame + ControlCipher.TagSize})", e.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(ControlCipher.TagSize)] // a tag and no type byte
    public async Task ASealedFrameWithoutATypeByteAndItsTagIsRefusedBeforeOpening(int length)
    {
        using var key = PresharedKey.Generate();
        var (_, acceptor) = Ciphers(key);
        var e = await Assert.ThrowsAsync<ProtocolException>(() =>
            new ControlChannel(new MemoryStream(Frame(length, new byte[Math.Max(length, 1)])), acceptor).ReceiveAsync(default));
        Assert.Equal($"control frame of {length} bytes (limit {ProtocolConstants.MaxControlFrame + ControlCipher.TagSize})", e.Message);
    }

    [Fact]
    public async Task ASealedOneByteMessageIsRead()
    {
        using var key = PresharedKey.Generate();
        var (opener, acceptor) = Ciphers(key);
        var wire = new MemoryStream();
        await new ControlChannel(wire, opener).SendAsync(new Ping(), default);
        Assert.Equal(4 + 1 + ControlCipher.TagSize, wire.Length);
        wire.Position = 0;
        Assert.Equal(new Ping(), await new ControlChannel(wire, acceptor).ReceiveAsync(default));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task FramesOfGrowingAndShrinkingSizesAreEachReadWhole(bool sealedFrames)
    {
        // The receive buffers start at 256 bytes and grow: to at least the frame, even when that is more than double.
        using var key = PresharedKey.Generate();
        (ControlCipher? opener, ControlCipher? acceptor) = sealedFrames ? Ciphers(key) : (null, null);
        int[] sizes = [40, 300, 5000, 100, 20000, 60000, 30];
        var sent = sizes.Select(n => HelloOfFrameLength(n)).ToArray();
        var wire = new MemoryStream();
        var sender = new ControlChannel(wire, opener);
        foreach (var m in sent) await sender.SendAsync(m, default);
        wire.Position = 0;
        var receiver = new ControlChannel(wire, acceptor);
        foreach (var m in sent) AssertSameHello(m, await receiver.ReceiveAsync(default));
        Assert.Null(await receiver.ReceiveAsync(default));
    }

    [Fact]
    public async Task EachSendWritesOnlyItsOwnFrame()
    {
        var wire = new MemoryStream();
        var channel = new ControlChannel(wire);
        ControlMessage[] messages = [new Refuse("a much longer first reason"), new Progress(5, 6), new Abort("x")];
        foreach (var m in messages) await channel.SendAsync(m, default);
        Assert.Equal(messages.SelectMany(Encode).ToArray(), wire.ToArray());
    }

    [Fact]
    public async Task ConcurrentSendsNeverInterleave()
    {
        // A bounded deadline, not a timing check: a broken send lock fails here instead of hanging the run.
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var (a, b) = InMemoryConnection.Create();
        var sender = new ControlChannel(a);
        var messages = Enumerable.Range(0, 200).Select(i => (ControlMessage)new Abort(new string((char)('a' + i % 26), 1 + i * 7 % 300))).ToArray();
        var sends = Enumerable.Range(0, 4).Select(t => Task.Run(async () =>
        {
            for (int i = t; i < messages.Length; i += 4) await sender.SendAsync(messages[i], deadline.Token);
        })).ToArray();
        var receiver = new ControlChannel(b);
        var got = new List<ControlMessage>();
        for (int i = 0; i < messages.Length; i++) got.Add((await receiver.ReceiveAsync(deadline.Token))!);
        await Task.WhenAll(sends).WaitAsync(deadline.Token);
        Assert.Equal(messages.Select(m => ((Abort)m).Reason).Order(), got.Select(m => Assert.IsType<Abort>(m).Reason).Order());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public async Task AConnectionClosedInsideTheLengthPrefixIsAProtocolError(int bytes)
    {
        var e = await Assert.ThrowsAsync<ProtocolException>(() => new ControlChannel(new MemoryStream(new byte[bytes])).ReceiveAsync(default));
        Assert.Equal("control connection closed in the middle of a frame", e.Message);
    }

    [Fact]
    public async Task AConnectionClosedInsideTheBodyIsAProtocolError()
    {
        var e = await Assert.ThrowsAsync<ProtocolException>(() => new ControlChannel(new MemoryStream(Frame(10, new byte[9]))).ReceiveAsync(default));
        Assert.Equal("control connection closed in the middle of a frame", e.Message);
    }

    [Fact]
    public async Task ExpectReturnsTheMessageOfTheTypeAsked()
    {
        var channel = new ControlChannel(new MemoryStream(Encode(new Welcome(4, 2, 9))));
        Assert.Equal(new Welcome(4, 2, 9), await channel.ExpectAsync<Welcome>(default));
    }

    [Fact]
    public async Task ExpectNamesWhatItWaitedForWhenThePeerCloses()
    {
        var e = await Assert.ThrowsAsync<ProtocolException>(() => new ControlChannel(new MemoryStream()).ExpectAsync<Welcome>(default));
        Assert.Equal("peer closed the connection while Welcome was expected", e.Message);
    }

    [Fact]
    public async Task ExpectTurnsARefusalOrAnAbortIntoTheirReasonAndAnythingElseIntoAProtocolError()
    {
        var refused = await Assert.ThrowsAsync<KaDeployException>(() => new ControlChannel(new MemoryStream(Encode(new Refuse("session is full")))).ExpectAsync<Welcome>(default));
        Assert.Equal("refused: session is full", refused.Message);
        var aborted = await Assert.ThrowsAsync<KaDeployException>(() => new ControlChannel(new MemoryStream(Encode(new Abort("operator stop")))).ExpectAsync<Plan>(default));
        Assert.Equal("aborted: operator stop", aborted.Message);
        var other = await Assert.ThrowsAsync<ProtocolException>(() => new ControlChannel(new MemoryStream(Encode(new Progress(1, 2)))).ExpectAsync<Welcome>(default));
        Assert.Equal("got Progress while Welcome was expected", other.Message);
        // Asking for a Refuse gets it, not an exception.
        Assert.Equal(new Refuse("r"), await new ControlChannel(new MemoryStream(Encode(new Refuse("r")))).ExpectAsync<Refuse>(default));
    }

    [Fact]
    public void AChannelNeedsAStream()
    {
        Assert.Equal("stream", Assert.Throws<ArgumentNullException>(() => new ControlChannel(null!)).ParamName);
        Assert.Equal("stream", Assert.Throws<ArgumentNullException>(() => new ControlChannel(null!, null)).ParamName);
    }

    [Fact]
    public void IsSealedSaysWhetherACipherWasGiven()
    {
        using var key = PresharedKey.Generate();
        var (opener, _) = Ciphers(key);
        Assert.False(new ControlChannel(new MemoryStream()).IsSealed);
        Assert.False(new ControlChannel(new MemoryStream(), null).IsSealed);
        Assert.True(new ControlChannel(new MemoryStream(), opener).IsSealed);
    }

    [Fact]
    public async Task DisposingReleasesTheStreamAndTheCipher()
    {
        using var key = PresharedKey.Generate();
        var (opener, _) = Ciphers(key);
        var stream = new MemoryStream();
        var channel = new ControlChannel(stream, opener);
        Assert.Same(stream, channel.Stream);
        await channel.DisposeAsync();
        Assert.False(stream.CanRead);
        Assert.Throws<ObjectDisposedException>(() => opener.Seal(new byte[4 + 1 + ControlCipher.TagSize]));
    }
}
