using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using KaDeploy.Protocol;
using KaDeploy.Security;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Protocol;

/// <summary>
/// The handshake against a scripted peer that writes and checks the bytes of docs/protocol.md section 2
/// itself (magic, version, status, flags, nonces, the two HMAC proofs over the transcript hash, the
/// refusal layout), so a field, label or check that the code under test changes on both sides at once is
/// still seen. Written to kill the mutants Stryker left alive in <c>Handshake.cs</c> (tests/README.md).
/// </summary>
public class HandshakeMutationTests
{
    private const string Peer = "server 198.18.0.1:30765";
    private const string Opener = "198.18.0.7:41234";
    private const int OpenerFixed = 8 + 2 + 1 + 1 + 32 + 2;
    private const int AcceptorHello = 8 + 2 + 1 + 1 + 32;

    // ---- the wire as the design note writes it, independent of Handshake.cs ----

    private static byte[] OpenerHello(ushort version = ProtocolConstants.Version, byte channel = 1, byte flags = 0,
        byte[]? session = null, int? sessionLength = null, byte[]? nonce = null)
    {
        session ??= "lab"u8.ToArray();
        var m = new byte[OpenerFixed + session.Length];
        "KADEPLOY"u8.CopyTo(m);
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(8), version);
        m[10] = channel;
        m[11] = flags;
        (nonce ?? RandomNumberGenerator.GetBytes(32)).CopyTo(m, 12);
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(44), (ushort)(sessionLength ?? session.Length));
        session.CopyTo(m, OpenerFixed);
        return m;
    }

    /// <summary>The acceptor's hello without its MAC: head (magic, version, status 0), flags, nonce.</summary>
    private static byte[] AcceptorReply(byte flags, byte[] nonce, ushort version = ProtocolConstants.Version, string magic = "KADEPLOY", byte status = 0)
    {
        var m = new byte[AcceptorHello];
        Encoding.ASCII.GetBytes(magic).CopyTo(m, 0);
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(8), version);
        m[10] = status;
        m[11] = flags;
        nonce.CopyTo(m, 12);
        return m;
    }

    private static byte[] AcceptorRefusal(byte[] reason)
    {
        var m = new byte[11 + 2 + reason.Length];
        "KADEPLOY"u8.CopyTo(m);
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(8), ProtocolConstants.Version);
        m[10] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(11), (ushort)reason.Length);
        reason.CopyTo(m, 13);
        return m;
    }

    private static byte[] Transcript(byte[] openerHello, byte[] acceptorHelloWithoutMac) =>
        SHA256.HashData([.. openerHello, .. acceptorHelloWithoutMac]);

    private static byte[] Proof(PresharedKey key, string label, byte[] transcript) =>
        HMACSHA256.HashData(key.Bytes, [.. Encoding.ASCII.GetBytes(label), .. transcript]);

    private static async Task<byte[]> ReadOpenerHello(Stream s)
    {
        var fixedPart = new byte[OpenerFixed];
        await s.ReadExactlyAsync(fixedPart);
        var session = new byte[BinaryPrimitives.ReadUInt16LittleEndian(fixedPart.AsSpan(44))];
        await s.ReadExactlyAsync(session);
        return [.. fixedPart, .. session];
    }

    private static async Task<byte[]> Read(Stream s, int n)
    {
        var b = new byte[n];
        await s.ReadExactlyAsync(b);
        return b;
    }

    private static async Task<byte[]> ReadToEnd(Stream s)
    {
        var all = new MemoryStream();
        await s.CopyToAsync(all);
        return all.ToArray();
    }

    /// <summary>A connection whose reads give <paramref name="incoming"/> and whose writes throw <paramref name="onWrite"/>.</summary>
    private sealed class BrokenStream(byte[] incoming, Exception? onWrite, Exception? onRead = null) : DuplexStream
    {
        private int _pos;
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (onRead is not null) throw onRead;
            int n = Math.Min(buffer.Length, incoming.Length - _pos);
            incoming.AsMemory(_pos, n).CopyTo(buffer);
            _pos += n;
            return ValueTask.FromResult(n);
        }
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
            onWrite is null ? ValueTask.CompletedTask : throw onWrite;
    }

    // ---- the opener ----

    [Theory]
    [InlineData(HandshakeChannel.Control, false)]
    [InlineData(HandshakeChannel.Data, true)]
    [InlineData(HandshakeChannel.Go, false)]
    public async Task TheOpenerHelloIsMagicVersionChannelFlagsNonceAndTheSessionInUtf8(HandshakeChannel channel, bool keyed)
    {
        using var key = keyed ? PresharedKey.Generate() : null;
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, channel, "lab-ü", key, Peer, default);
        var hello = await ReadOpenerHello(a);
        Assert.Equal("KADEPLOY"u8.ToArray(), hello[..8]);
        Assert.Equal(ProtocolConstants.Version, BinaryPrimitives.ReadUInt16LittleEndian(hello.AsSpan(8)));
        Assert.Equal((byte)channel, hello[10]);
        Assert.Equal(keyed ? 1 : 0, hello[11]);
        Assert.Equal(6, BinaryPrimitives.ReadUInt16LittleEndian(hello.AsSpan(44))); // bytes, not characters
        Assert.Equal("lab-ü", Encoding.UTF8.GetString(hello.AsSpan(OpenerFixed)));
        Assert.Contains(hello[12..44], b => b != 0); // a nonce, not zeros
        a.Dispose();
        await Assert.ThrowsAsync<HandshakeException>(() => open);
    }

    [Fact]
    public async Task EveryHelloCarriesAFreshNonceOnBothSides()
    {
        var nonces = new List<byte[]>();
        for (int i = 0; i < 2; i++)
        {
            var (o, a) = InMemoryConnection.Create();
            var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", null, Peer, default);
            var accept = Handshake.AcceptAsync(a, null, "lab", Opener, default);
            await Task.WhenAll(open, accept);
            nonces.Add(o.Sent[12..44]);
            nonces.Add(a.Sent[12..44]);
        }
        Assert.Equal(4, nonces.Count);
        foreach (var n in nonces) Assert.Contains(n, b => b != 0);
        Assert.Equal(4, nonces.Select(Convert.ToHexString).Distinct().Count());
    }

    [Fact]
    public async Task ASessionNameOf255BytesIsAcceptedAnd256AreRefusedBeforeAnythingIsSent()
    {
        string longest = new('s', 255);
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Control, longest, null, Peer, default);
        var accept = Handshake.AcceptAsync(a, null, null, Opener, default);
        Assert.Equal(longest, (await open).Session);
        Assert.Equal(longest, (await accept).Session);

        var (o2, _) = InMemoryConnection.Create();
        string tooLong = new('ü', 128); // 128 characters, 256 UTF-8 bytes
        var e = await Assert.ThrowsAsync<KaDeployException>(() => Handshake.OpenAsync(o2, HandshakeChannel.Control, tooLong, null, Peer, default));
        Assert.Equal("session name longer than 255 bytes", e.Message);
        Assert.Empty(o2.Sent);
    }

    [Fact]
    public async Task AnAnswerWithAnotherMagicIsNotAPeer()
    {
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", null, Peer, default);
        await ReadOpenerHello(a);
        await a.WriteAsync(AcceptorReply(0, new byte[32], magic: "KADEPLOX"));
        var e = await Assert.ThrowsAsync<HandshakeException>(() => open);
        Assert.Equal($"{Peer} is not a ka-deploy peer (bad handshake magic)", e.Message);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(255)]
    public async Task AnUnknownStatusIsRefusedWithItsNumber(byte status)
    {
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", null, Peer, default);
        await ReadOpenerHello(a);
        await a.WriteAsync(AcceptorReply(0, new byte[32], status: status));
        var e = await Assert.ThrowsAsync<HandshakeException>(() => open);
        Assert.Equal($"{Peer} sent handshake status {status}", e.Message);
    }

    [Fact]
    public async Task AnAcceptorOfAnotherVersionIsNamedWithBothVersions()
    {
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", null, Peer, default);
        await ReadOpenerHello(a);
        await a.WriteAsync(AcceptorReply(0, new byte[32], version: 2));
        var e = await Assert.ThrowsAsync<HandshakeException>(() => open);
        Assert.Equal($"{Peer} speaks protocol version 2, expected {ProtocolConstants.Version}", e.Message);
    }

    [Fact]
    public async Task ARefusalShowsItsReasonOnOneLineWithControlCharactersReplaced()
    {
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", null, Peer, default);
        await ReadOpenerHello(a);
        await a.WriteAsync(AcceptorRefusal(Encoding.UTF8.GetBytes("session\nfull\u001b[2J ü")));
        var e = await Assert.ThrowsAsync<HandshakeException>(() => open);
        Assert.Equal($"{Peer} refused the connection: session?full?[2J ü", e.Message);
    }

    [Theory]
    [InlineData(1024, true)]
    [InlineData(1025, false)]
    public async Task ARefusalReasonOfUpTo1024BytesIsShownAndALongerOneIsNot(int length, bool shown)
    {
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", null, Peer, default);
        await ReadOpenerHello(a);
        await a.WriteAsync(AcceptorRefusal(Encoding.ASCII.GetBytes(new string('r', length))));
        var e = await Assert.ThrowsAsync<HandshakeException>(() => open);
        Assert.Equal(shown ? $"{Peer} refused the connection: {new string('r', length)}" : $"{Peer} refused with a {length}-byte reason (limit 1024)", e.Message);
    }

    [Theory]
    [InlineData(0)]   // nothing at all
    [InlineData(5)]   // part of the head
    [InlineData(11)]  // the head, no flags or nonce
    [InlineData(30)]  // part of the nonce
    public async Task AnAcceptorThatClosesInTheMiddleOfItsHelloIsNamed(int sent)
    {
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", null, Peer, default);
        await ReadOpenerHello(a);
        await a.WriteAsync(AcceptorReply(0, new byte[32]).AsMemory(0, sent));
        a.Dispose();
        var e = await Assert.ThrowsAsync<HandshakeException>(() => open);
        Assert.Equal($"{Peer} closed the connection during the handshake", e.Message);
    }

    [Fact]
    public async Task ARefusalCutShortIsAClosedConnection()
    {
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", null, Peer, default);
        await ReadOpenerHello(a);
        await a.WriteAsync(AcceptorRefusal("full"u8.ToArray())[..^1]);
        a.Dispose();
        var e = await Assert.ThrowsAsync<HandshakeException>(() => open);
        Assert.Equal($"{Peer} closed the connection during the handshake", e.Message);
    }

    [Fact]
    public async Task OnlyBit0OfTheAcceptorFlagsMeansKeyed()
    {
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Data, "lab", null, Peer, default);
        await ReadOpenerHello(a);
        await a.WriteAsync(AcceptorReply(0xFE, RandomNumberGenerator.GetBytes(32)));
        var r = await open;
        Assert.False(r.Keyed);
        Assert.Equal(HandshakeChannel.Data, r.Channel);
        Assert.Equal("lab", r.Session);
    }

    [Fact]
    public async Task AKeyedAcceptorIsRefusedByAnUnkeyedOpenerAndTheReverse()
    {
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", null, Peer, default);
        await ReadOpenerHello(a);
        await a.WriteAsync(AcceptorReply(1, RandomNumberGenerator.GetBytes(32)));
        Assert.Equal($"{Peer} requires a key and this side has none (--key-file)", (await Assert.ThrowsAsync<HandshakeException>(() => open)).Message);

        using var key = PresharedKey.Generate();
        (o, a) = InMemoryConnection.Create();
        open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", key, Peer, default);
        await ReadOpenerHello(a);
        await a.WriteAsync(AcceptorReply(0, RandomNumberGenerator.GetBytes(32)));
        Assert.Equal($"{Peer} has no key but this side was given one: refusing to talk in clear", (await Assert.ThrowsAsync<HandshakeException>(() => open)).Message);
    }

    [Fact]
    public async Task AKeyedOpenerAcceptsTheDocumentedAcceptorProofAndAnswersWithTheDocumentedOpenerProof()
    {
        using var key = PresharedKey.Generate();
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", key, Peer, default);
        var hello = await ReadOpenerHello(a);
        var nonceA = RandomNumberGenerator.GetBytes(32);
        var reply = AcceptorReply(1, nonceA);
        var t = Transcript(hello, reply);
        await a.WriteAsync((byte[])[.. reply, .. Proof(key, "kd2 acceptor", t)]);
        var r = await open;
        Assert.True(r.Keyed);
        var final = await Read(a, 1 + 32);
        Assert.Equal(0, final[0]);
        Assert.Equal(Proof(key, "kd2 opener", t), final[1..]);
        Assert.Equal(hello.Length + final.Length, o.Sent.Length); // nothing else

        // Its cipher is the one both nonces and the key derive (the acceptor's side opens what it seals).
        using var acceptorCipher = ControlCipher.Derive(key, hello.AsSpan(12, 32), nonceA, isOpener: false);
        await using var sender = new ControlChannel(o, r.Cipher);
        await sender.SendAsync(new Progress(7, 8), default);
        Assert.Equal(new Progress(7, 8), await new ControlChannel(a, acceptorCipher).ReceiveAsync(default));
    }

    [Theory]
    [InlineData("kd2 opener")]   // the other side's label
    [InlineData("kd2 acceptor")] // the right label over another transcript
    public async Task AKeyedOpenerRefusesAWrongAcceptorProofAndTellsTheAcceptorWhy(string label)
    {
        using var key = PresharedKey.Generate();
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", key, Peer, default);
        var hello = await ReadOpenerHello(a);
        var reply = AcceptorReply(1, RandomNumberGenerator.GetBytes(32));
        var t = label == "kd2 acceptor" ? Transcript(hello, AcceptorReply(1, new byte[32])) : Transcript(hello, reply);
        await a.WriteAsync((byte[])[.. reply, .. Proof(key, label, t)]);
        var e = await Assert.ThrowsAsync<HandshakeException>(() => open);
        Assert.Equal($"{Peer} failed authentication: it does not hold this key (wrong key, or a rogue peer)", e.Message);
        var reason = "the acceptor failed authentication (wrong key)"u8.ToArray();
        var refusal = new byte[1 + 2 + reason.Length];
        refusal[0] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(refusal.AsSpan(1), (ushort)reason.Length);
        reason.CopyTo(refusal, 3);
        Assert.Equal(refusal, o.Sent[hello.Length..]);
    }

    [Fact]
    public async Task AnOpenerProofFailureReachesTheAcceptorAsARefusalWithTheReason()
    {
        using var k1 = PresharedKey.Generate();
        using var k2 = PresharedKey.Generate();
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", k1, Peer, default);
        var accept = Handshake.AcceptAsync(a, k2, "lab", Opener, default);
        await Assert.ThrowsAsync<HandshakeException>(() => open);
        var e = await Assert.ThrowsAsync<HandshakeException>(() => accept);
        Assert.Equal($"{Opener} refused this side: the acceptor failed authentication (wrong key)", e.Message);
    }

    [Fact]
    public async Task ASilentAcceptorTimesOut()
    {
        var (o, _) = InMemoryConnection.Create();
        var e = await Assert.ThrowsAsync<HandshakeException>(() => Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", null, Peer, default, TimeSpan.FromMilliseconds(50)));
        Assert.Equal($"{Peer}: handshake timed out", e.Message);
    }

    [Fact]
    public async Task TheCallersCancellationIsACancellationNotATimeout()
    {
        using var cts = new CancellationTokenSource();
        var (o, a) = InMemoryConnection.Create();
        var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "lab", null, Peer, cts.Token);
        await ReadOpenerHello(a);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => open);

        using var cts2 = new CancellationTokenSource();
        var (_, a2) = InMemoryConnection.Create();
        var accept = Handshake.AcceptAsync(a2, null, null, Opener, cts2.Token);
        cts2.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => accept);
    }

    [Fact]
    public async Task AConnectionErrorIsAHandshakeErrorNamingThePeer()
    {
        var e = await Assert.ThrowsAsync<HandshakeException>(() =>
            Handshake.OpenAsync(new BrokenStream([], null, new IOException("Connection reset by peer")), HandshakeChannel.Control, "lab", null, Peer, default));
        Assert.Equal($"{Peer}: connection lost during the handshake (Connection reset by peer)", e.Message);
        e = await Assert.ThrowsAsync<HandshakeException>(() =>
            Handshake.AcceptAsync(new BrokenStream([], null, new IOException("Broken pipe")), null, null, Opener, default));
        Assert.Equal($"{Opener}: connection lost during the handshake (Broken pipe)", e.Message);
    }

    [Fact]
    public async Task MissingArgumentsAreNamed()
    {
        Assert.Equal("stream", (await Assert.ThrowsAsync<ArgumentNullException>(() => Handshake.OpenAsync(null!, HandshakeChannel.Control, "lab", null, Peer, default))).ParamName);
        Assert.Equal("session", (await Assert.ThrowsAsync<ArgumentNullException>(() => Handshake.OpenAsync(new MemoryStream(), HandshakeChannel.Control, null!, null, Peer, default))).ParamName);
        Assert.Equal("stream", (await Assert.ThrowsAsync<ArgumentNullException>(() => Handshake.AcceptAsync(null!, null, null, Opener, default))).ParamName);
    }

    // ---- the acceptor ----

    [Theory]
    [InlineData(HandshakeChannel.Control)]
    [InlineData(HandshakeChannel.Data)]
    [InlineData(HandshakeChannel.Go)]
    public async Task AnUnkeyedAcceptorAnswersMagicVersionStatusFlagsAndNonceAndNothingMore(HandshakeChannel channel)
    {
        var (o, a) = InMemoryConnection.Create();
        var accept = Handshake.AcceptAsync(a, null, null, Opener, default);
        await o.WriteAsync(OpenerHello(channel: (byte)channel, session: "any-ü"u8.ToArray()));
        var r = await accept;
        Assert.Equal(channel, r.Channel);
        Assert.Equal("any-ü", r.Session);
        Assert.False(r.Keyed);
        a.Dispose();
        var reply = await ReadToEnd(o);
        Assert.Equal(AcceptorHello, reply.Length);
        Assert.Equal(AcceptorReply(0, reply[12..]), reply);
        Assert.Contains(reply[12..], b => b != 0);
    }

    public static TheoryData<string, byte[], string> Refusals() => new()
    {
        { "another version", OpenerHello(version: 2), $"protocol version 2, expected {ProtocolConstants.Version}" },
        { "channel 0", OpenerHello(channel: 0), "unknown channel 0" },
        { "channel 4", OpenerHello(channel: 4), "unknown channel 4" },
        { "a session name of 256 bytes", OpenerHello(session: [], sessionLength: 256), "session name of 256 bytes (limit 255)" },
        { "a session name that is not UTF-8", OpenerHello(session: [0x6c, 0xff, 0x62]), "session name is not UTF-8" },
        { "a keyed opener", OpenerHello(flags: 1), "the acceptor has no key but the opener was given one (--key-file on one side only)" },
        { "another session", OpenerHello(session: "other"u8.ToArray()), "session 'other' is not this side's session 'lab'" },
    };

    [Theory]
    // Each case carries a fresh random nonce: enumerated at discovery, its name would differ from the run's, and a
    // Stryker run then counts the discovered cases as never finished ("Initial test run could not be completed").
    [MemberData(nameof(Refusals), DisableDiscoveryEnumeration = true)]
    public async Task TheAcceptorRefusesWithTheReasonOnTheWireAndInItsOwnError(string what, byte[] hello, string reason)
    {
        var (o, a) = InMemoryConnection.Create();
        var accept = Handshake.AcceptAsync(a, null, "lab", Opener, default);
        await o.WriteAsync(hello);
        var e = await Assert.ThrowsAsync<HandshakeException>(() => accept);
        Assert.True($"refused {Opener}: {reason}" == e.Message, $"{what}: {e.Message}");
        a.Dispose();
        Assert.Equal(AcceptorRefusal(Encoding.UTF8.GetBytes(reason)), await ReadToEnd(o));
    }

    [Fact]
    public async Task AKeyedAcceptorRefusesAnUnkeyedOpener()
    {
        using var key = PresharedKey.Generate();
        var (o, a) = InMemoryConnection.Create();
        var accept = Handshake.AcceptAsync(a, key, null, Opener, default);
        await o.WriteAsync(OpenerHello(flags: 0xFE)); // only bit 0 says keyed
        var e = await Assert.ThrowsAsync<HandshakeException>(() => accept);
        const string reason = "this session requires a key and the opener has none (--key-file)";
        Assert.Equal($"refused {Opener}: {reason}", e.Message);
        a.Dispose();
        Assert.Equal(AcceptorRefusal(Encoding.UTF8.GetBytes(reason)), await ReadToEnd(o));
    }

    [Fact]
    public async Task AnAcceptorWithoutAnExpectedSessionTakesAnyAndOneWithItTakesItsOwn()
    {
        foreach (var expected in new[] { null, "lab" })
        {
            var (o, a) = InMemoryConnection.Create();
            var accept = Handshake.AcceptAsync(a, null, expected, Opener, default);
            await o.WriteAsync(OpenerHello(session: "lab"u8.ToArray()));
            Assert.Equal("lab", (await accept).Session);
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(20)]
    [InlineData(OpenerFixed)] // the fixed part, not the session name it announced
    public async Task AnOpenerThatClosesInTheMiddleOfItsHelloIsNamed(int sent)
    {
        var (o, a) = InMemoryConnection.Create();
        var accept = Handshake.AcceptAsync(a, null, null, Opener, default);
        await o.WriteAsync(OpenerHello().AsMemory(0, sent));
        o.Dispose();
        var e = await Assert.ThrowsAsync<HandshakeException>(() => accept);
        Assert.Equal($"{Opener} closed the connection during the handshake", e.Message);
    }

    [Fact]
    public async Task AnOpenerWithAnotherMagicIsNotAPeerAndGetsNoAnswer()
    {
        var (o, a) = InMemoryConnection.Create();
        var accept = Handshake.AcceptAsync(a, null, null, Opener, default);
        var hello = OpenerHello();
        hello[7] = (byte)'X';
        await o.WriteAsync(hello);
        var e = await Assert.ThrowsAsync<HandshakeException>(() => accept);
        Assert.Equal($"{Opener} is not a ka-deploy peer (bad handshake magic)", e.Message);
        Assert.Empty(a.Sent);
    }

    /// <summary>A keyed acceptor up to the opener's answer: the hello it got, its reply and MAC, the transcript.</summary>
    private static async Task<(Task<HandshakeResult> Accept, InMemoryConnection.End O, byte[] Hello, byte[] Reply, byte[] Transcript)> KeyedAcceptor(PresharedKey key)
    {
        var (o, a) = InMemoryConnection.Create();
        var accept = Handshake.AcceptAsync(a, key, "lab", Opener, default);
        var hello = OpenerHello(flags: 1, channel: (byte)HandshakeChannel.Data);
        await o.WriteAsync(hello);
        var reply = await Read(o, AcceptorHello);
        var mac = await Read(o, 32);
        var t = Transcript(hello, reply);
        Assert.Equal(AcceptorReply(1, reply[12..]), reply);
        Assert.Equal(Proof(key, "kd2 acceptor", t), mac);
        return (accept, o, hello, reply, t);
    }

    [Fact]
    public async Task AKeyedAcceptorProvesItselfAsDocumentedAndAcceptsTheDocumentedOpenerProof()
    {
        using var key = PresharedKey.Generate();
        var (accept, o, hello, reply, t) = await KeyedAcceptor(key);
        await o.WriteAsync((byte[])[0, .. Proof(key, "kd2 opener", t)]);
        var r = await accept;
        Assert.True(r.Keyed);
        Assert.Equal(HandshakeChannel.Data, r.Channel);
        using var openerCipher = ControlCipher.Derive(key, hello.AsSpan(12, 32), reply.AsSpan(12, 32), isOpener: true);
        var (x, y) = InMemoryConnection.Create();
        await using var sender = new ControlChannel(x, r.Cipher);
        await sender.SendAsync(new Adopt(5), default);
        Assert.Equal(new Adopt(5), await new ControlChannel(y, openerCipher).ReceiveAsync(default));
    }

    [Fact]
    public async Task AKeyedAcceptorRefusesTheAcceptorLabelAsTheOpenerProof()
    {
        using var key = PresharedKey.Generate();
        var (accept, o, _, _, t) = await KeyedAcceptor(key);
        await o.WriteAsync((byte[])[0, .. Proof(key, "kd2 acceptor", t)]); // its own proof reflected back
        var e = await Assert.ThrowsAsync<HandshakeException>(() => accept);
        Assert.Equal($"{Opener} failed authentication: it does not hold this key (wrong key, or a rogue peer)", e.Message);
    }

    [Fact]
    public async Task AKeyedAcceptorNamesTheOpenersRefusalAndAnUnknownStatus()
    {
        using var key = PresharedKey.Generate();
        var (accept, o, _, _, _) = await KeyedAcceptor(key);
        await o.WriteAsync((byte[])[1, 5, 0, .. "nope\u0007"u8]);
        Assert.Equal($"{Opener} refused this side: nope?", (await Assert.ThrowsAsync<HandshakeException>(() => accept)).Message);

        (accept, o, _, _, _) = await KeyedAcceptor(key);
        await o.WriteAsync((byte[])[2, .. new byte[32]]);
        Assert.Equal($"{Opener} sent handshake status 2", (await Assert.ThrowsAsync<HandshakeException>(() => accept)).Message);
    }

    [Fact]
    public async Task AKeyedAcceptorSaysWhenTheOpenerLeftBeforeProvingItself()
    {
        using var key = PresharedKey.Generate();
        var (accept, o, _, _, _) = await KeyedAcceptor(key);
        o.Dispose();
        Assert.Equal($"{Opener} closed the connection during the handshake before proving it holds the key (wrong key, or not a ka-deploy peer)",
            (await Assert.ThrowsAsync<HandshakeException>(() => accept)).Message);

        (accept, o, _, _, _) = await KeyedAcceptor(key);
        await o.WriteAsync(new byte[1 + 31]); // status 0 and a proof one byte short
        o.Dispose();
        Assert.Equal($"{Opener} closed the connection during the handshake", (await Assert.ThrowsAsync<HandshakeException>(() => accept)).Message);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ARefusalToAPeerThatIsGoneStillSaysWhyItWasRefused(bool reset)
    {
        // The refusal is a courtesy: a peer that already closed must not turn "refused: why" into "connection lost".
        Exception onWrite = reset ? new IOException("Broken pipe") : new ObjectDisposedException("socket");
        var e = await Assert.ThrowsAsync<HandshakeException>(() =>
            Handshake.AcceptAsync(new BrokenStream(OpenerHello(version: 9), onWrite), null, null, Opener, default));
        Assert.Equal($"refused {Opener}: protocol version 9, expected {ProtocolConstants.Version}", e.Message);

        // The opener's refusal of a wrong acceptor proof, to an acceptor that is gone: still the authentication failure.
        using var key = PresharedKey.Generate();
        byte[] reply = [.. AcceptorReply(1, RandomNumberGenerator.GetBytes(32)), .. new byte[32]]; // a proof that cannot match
        e = await Assert.ThrowsAsync<HandshakeException>(() =>
            Handshake.OpenAsync(new BrokenStreamAfter(reply, onWrite, writable: OpenerFixed + 3), HandshakeChannel.Control, "lab", key, Peer, default));
        Assert.Equal($"{Peer} failed authentication: it does not hold this key (wrong key, or a rogue peer)", e.Message);
    }

    /// <summary>Lets the first <paramref name="writable"/> bytes be written, then throws <paramref name="onWrite"/>.</summary>
    private sealed class BrokenStreamAfter(byte[] incoming, Exception onWrite, int writable) : DuplexStream
    {
        private int _pos;
        private int _written;
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            int n = Math.Min(buffer.Length, incoming.Length - _pos);
            incoming.AsMemory(_pos, n).CopyTo(buffer);
            _pos += n;
            return ValueTask.FromResult(n);
        }
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (_written + buffer.Length > writable) throw onWrite;
            _written += buffer.Length;
            return ValueTask.CompletedTask;
        }
    }
}
