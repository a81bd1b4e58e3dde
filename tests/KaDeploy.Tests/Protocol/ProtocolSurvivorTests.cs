using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using KaDeploy.Payloads;
using KaDeploy.Protocol;
using KaDeploy.Security;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Protocol;

/// <summary>
/// Written against the mutants the Protocol/ Stryker run of the fifth session (2026-11-27) left alive
/// (tests/README.md, Mutation testing): every flush of the handshake and the control channel, the sealed send
/// buffer's room for the tag, the acceptor's refusals under a caller's context, and the codec's
/// messages. Each failed once with its mutant planted by hand.
/// </summary>
public class ProtocolSurvivorTests
{
    /// <summary>
    /// A link that delivers what was written only when flushed (a buffered stream, TLS): code that forgets a flush
    /// leaves its peer waiting. Disposing it drops what was not flushed, as a crash would.
    /// </summary>
    private sealed class FlushGated(InMemoryConnection.End inner) : DuplexStream
    {
        private readonly MemoryStream _unflushed = new();

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => inner.ReadAsync(buffer, cancellationToken);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            cancellationToken.ThrowIfCancellationRequested();
            lock (_unflushed) _unflushed.Write(buffer.Span);
            return ValueTask.CompletedTask;
        }

        public override async Task FlushAsync(CancellationToken cancellationToken)
        {
            byte[] pending;
            lock (_unflushed) { pending = _unflushed.ToArray(); _unflushed.SetLength(0); }
            await inner.WriteAsync(pending, cancellationToken);
            await inner.FlushAsync(cancellationToken);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) inner.Dispose();
            base.Dispose(disposing);
        }
    }

    private static (FlushGated A, FlushGated B) GatedPair()
    {
        var (a, b) = InMemoryConnection.Create();
        return (new FlushGated(a), new FlushGated(b));
    }

    // ---- flushes: a message written but never flushed never reaches the peer ----

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task BothSidesOfAHandshakeFlushEveryMessage(bool keyed)
    {
        using var key = keyed ? PresharedKey.Generate() : null;
        var (o, a) = GatedPair();
        using (o)
        using (a)
        {
            var accept = Handshake.AcceptAsync(a, key, "lab", "opener", default, Eventually.Deadline);
            var open = Handshake.OpenAsync(o, HandshakeChannel.Data, "lab", key, "acceptor", default, Eventually.Deadline);
            var opened = await open;   // needs the acceptor's flushed reply
            var accepted = await accept; // needs the opener's flushed hello (and, keyed, its flushed proof)
            Assert.Equal(keyed, opened.Keyed);
            Assert.Equal(keyed, accepted.Keyed);
            Assert.Equal(HandshakeChannel.Data, accepted.Channel);
        }
    }

    [Fact]
    public async Task AnAcceptorsRefusalIsFlushedBeforeItGivesUp()
    {
        var (o, a) = GatedPair();
        using (o)
        {
            var open = Handshake.OpenAsync(o, HandshakeChannel.Control, "other", null, "server", default, Eventually.Deadline);
            using (a)
            {
                var refused = await Assert.ThrowsAsync<HandshakeException>(() => Handshake.AcceptAsync(a, null, "lab", "node", default, Eventually.Deadline));
                Assert.Equal("refused node: session 'other' is not this side's session 'lab'", refused.Message);
            } // closed: what was not flushed is lost
            var e = await Assert.ThrowsAsync<HandshakeException>(() => open);
            Assert.Equal("server refused the connection: session 'other' is not this side's session 'lab'", e.Message);
        }
    }

    [Fact]
    public async Task AControlMessageIsFlushedWhenSent()
    {
        var (a, b) = GatedPair();
        await using var sender = new ControlChannel(a);
        await using var receiver = new ControlChannel(b);
        await sender.SendAsync(new Welcome(4, 5, 6), default);
        var got = await receiver.ReceiveAsync(default).WaitAsync(Eventually.Deadline);
        Assert.Equal(new Welcome(4, 5, 6), got);
    }

    // ---- the sealed send buffer ----

    [Fact]
    public async Task SealedMessagesOfEveryLengthRoundTrip()
    {
        // The tag is appended after the encoded message: whatever room the send buffer has left (none, a few bytes),
        // it must make room for the whole tag. Every length from empty to past two buffer growths is sent in turn.
        using var key = PresharedKey.Generate();
        var no = RandomNumberGenerator.GetBytes(32);
        var na = RandomNumberGenerator.GetBytes(32);
        var (a, b) = InMemoryConnection.Create();
        await using var sender = new ControlChannel(a, ControlCipher.Derive(key, no, na, isOpener: true));
        await using var receiver = new ControlChannel(b, ControlCipher.Derive(key, no, na, isOpener: false));
        for (int n = 0; n <= 1100; n++)
        {
            string reason = new('r', n);
            await sender.SendAsync(new Refuse(reason), default);
            var got = Assert.IsType<Refuse>(await receiver.ReceiveAsync(default));
            Assert.Equal(reason, got.Reason);
        }
    }

    /// <summary>A link that outlives the channel over it and records what reaches it.</summary>
    private sealed class Surviving : DuplexStream
    {
        public int Written;
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => ValueTask.FromResult(0);
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Written += buffer.Length;
            return ValueTask.CompletedTask;
        }
        public override ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    [Fact]
    public async Task ADisposedChannelSendsNothingMore()
    {
        var link = new Surviving();
        var channel = new ControlChannel(link);
        await channel.SendAsync(new Ping(), default);
        int before = link.Written;
        Assert.Equal(5, before);
        await channel.DisposeAsync();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => channel.SendAsync(new Ping(), default));
        Assert.Equal(before, link.Written);
    }

    // ---- the acceptor's refusals never resume on the caller's context ----

    /// <summary>
    /// An opener's hello followed by nothing; operation number <paramref name="pendAt"/> (reads, writes, flushes counted
    /// from 0) stays pending until <see cref="Release"/>, the others complete at once (NoCapturedContextTests' harness).
    /// </summary>
    private sealed class Stepped(byte[] incoming, int pendAt) : DuplexStream
    {
        private readonly TaskCompletionSource _gate = new();
        private int _read;
        private int _operations;
        public bool Pended { get; private set; }

        public void Release() => _gate.TrySetResult(); // continuations run here, inline

        private async Task Step()
        {
            if (_operations++ != pendAt) return;
            Pended = true;
            await _gate.Task.ConfigureAwait(false);
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await Step().ConfigureAwait(false);
            int n = Math.Min(buffer.Length, incoming.Length - _read);
            incoming.AsSpan(_read, n).CopyTo(buffer.Span);
            _read += n;
            return n;
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => await Step().ConfigureAwait(false);
        public override async Task FlushAsync(CancellationToken cancellationToken) => await Step().ConfigureAwait(false);
    }

    private static byte[] OpenerHello(byte channel = 1, byte flags = 0, byte[]? session = null, int? sessionLength = null)
    {
        session ??= "lab"u8.ToArray();
        var m = new byte[46 + session.Length];
        "KADEPLOY"u8.CopyTo(m);
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(8), ProtocolConstants.Version);
        m[10] = channel;
        m[11] = flags;
        RandomNumberGenerator.Fill(m.AsSpan(12, 32));
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(44), (ushort)(sessionLength ?? session.Length));
        session.CopyTo(m, 46);
        return m;
    }

    public static TheoryData<string> RefusalCases() => new() { "channel 4", "session of 256 bytes", "session not UTF-8", "keyed opener", "another session" };

    [Theory]
    [MemberData(nameof(RefusalCases))]
    public void AnAcceptorRefusingNeverResumesOnTheCallersContext(string what)
    {
        byte[] hello = what switch
        {
            "channel 4" => OpenerHello(channel: 4),
            "session of 256 bytes" => OpenerHello(session: [], sessionLength: 256),
            "session not UTF-8" => OpenerHello(session: [0x6c, 0xff, 0x62]),
            "keyed opener" => OpenerHello(flags: 1),
            _ => OpenerHello(session: "other"u8.ToArray()),
        };
        int posts = 0;
        var before = SynchronizationContext.Current;
        try
        {
            for (int pendAt = 0; ; pendAt++)
            {
                Assert.True(pendAt < 20, "the refusal did not end in 20 operations");
                var stream = new Stepped(hello, pendAt);
                var context = new CountingContext();
                SynchronizationContext.SetSynchronizationContext(context);
                var refusing = Handshake.AcceptAsync(stream, null, "lab", "peer", default);
                SynchronizationContext.SetSynchronizationContext(null);
                stream.Release();
                Assert.True(refusing.IsCompleted, $"operation {pendAt}: the acceptor waits on something other than its stream");
                Assert.IsType<HandshakeException>(refusing.Exception?.InnerException);
                posts += context.Posts;
                if (!stream.Pended) break; // each operation of the refusal has been the first to suspend
            }
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(before);
        }
        Assert.Equal(0, posts);
    }

    // ---- the codec's own messages ----

    private static byte[] Body(ControlMessage m)
    {
        var w = new ArrayBufferWriter<byte>();
        ControlCodec.Encode(m, w);
        return w.WrittenSpan[4..].ToArray();
    }

    [Fact]
    public void APlanNamingAnUnknownStreamCipherIsRefusedWithItsNumber()
    {
        var plan = new Plan(2, 1, "198.18.0.1", 4000, [3], PayloadKind.Tar, WireCompression.None, 10, new byte[16],
            StreamKey: new byte[StreamCipher.KeySize], StreamId: 5, Cipher: StreamCipherKind.Aegis256);
        byte[] body = Body(plan);
        Assert.Equal(StreamCipherKind.Aegis256, Assert.IsType<Plan>(ControlCodec.Decode(body)).Cipher);
        body[^1] = 9; // the cipher is the Plan's last byte
        Assert.Equal("plan names unknown stream cipher 9", Assert.Throws<ProtocolException>(() => ControlCodec.Decode(body)).Message);
    }

    [Fact]
    public void ATruncatedMessageAndAnOverlongStringSayWhatIsWrong()
    {
        byte[] body = Body(new Welcome(1, 2, 3));
        Assert.Equal("control message is truncated", Assert.Throws<ProtocolException>(() => ControlCodec.Decode(body[..^1])).Message);
        var e = Assert.Throws<ArgumentException>(() => Body(new Refuse(new string('x', 4097))));
        Assert.StartsWith("control string of 4097 bytes is too long", e.Message);
        Assert.Equal(4096, ((Refuse)ControlCodec.Decode(Body(new Refuse(new string('x', 4096))))).Reason.Length);
    }
}
