using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using KaDeploy.Protocol;
using KaDeploy.Security;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Protocol;

/// <summary>
/// The handshake and the control channel never resume on their caller's <see cref="SynchronizationContext"/>: library
/// code awaited by a caller that blocks on it (a synchronous wrapper, a single-threaded context) must not need that
/// caller's thread to go on, or it deadlocks. What matters is the first await that really suspends (after it the code
/// runs on the thread pool, where there is no context to capture), and which one that is depends on the peer: so each
/// path is run once per stream operation, with that operation the first (and only) one left pending, and a dropped
/// <c>ConfigureAwait(false)</c> on any await of the path shows as a post to the test's context. One thread, no timing.
/// </summary>
public class NoCapturedContextTests
{
    /// <summary>
    /// A connection whose operation number <paramref name="pendAt"/> (reads, writes, flushes and disposal counted from 0)
    /// stays pending until <see cref="ReleaseNext"/>, all others completing at once; its peer is a script that answers each
    /// write at once (what it returns is what later reads give).
    /// </summary>
    private sealed class SteppedStream(Func<byte[], byte[]> peer, int pendAt) : DuplexStream
    {
        private readonly Queue<TaskCompletionSource> _pending = new();
        private readonly Queue<byte> _incoming = new();
        private int _operations;

        public bool Pended { get; private set; }

        public void Give(byte[] bytes) { foreach (var b in bytes) _incoming.Enqueue(b); }

        public bool ReleaseNext()
        {
            if (_pending.Count == 0) return false;
            _pending.Dequeue().SetResult(); // continuations run here, inline
            return true;
        }

        private async Task Step()
        {
            if (_operations++ != pendAt) return;
            Pended = true;
            var t = new TaskCompletionSource();
            _pending.Enqueue(t);
            await t.Task.ConfigureAwait(false);
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await Step().ConfigureAwait(false);
            int n = Math.Min(buffer.Length, _incoming.Count);
            for (int i = 0; i < n; i++) buffer.Span[i] = _incoming.Dequeue();
            return n;
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await Step().ConfigureAwait(false);
            Give(peer(buffer.ToArray()));
        }

        public override async Task FlushAsync(CancellationToken cancellationToken) => await Step().ConfigureAwait(false);

        public override async ValueTask DisposeAsync() => await Step().ConfigureAwait(false);
    }

    /// <summary>
    /// Runs a path once per stream operation, that operation left pending: started under a counting context, released
    /// without one (so what follows runs inline, on this thread). Returns the posts of every run, and the last run's task.
    /// </summary>
    private static int EveryFirstSuspension(Func<int, SteppedStream> connect, Func<SteppedStream, Task> start, out Task last)
    {
        int posts = 0;
        var before = SynchronizationContext.Current;
        try
        {
            for (int pendAt = 0; ; pendAt++)
            {
                Assert.True(pendAt < 100, "the path did not end in 100 operations");
                var stream = connect(pendAt);
                var context = new CountingContext();
                SynchronizationContext.SetSynchronizationContext(context);
                var finished = start(stream);
                SynchronizationContext.SetSynchronizationContext(null);
                while (!finished.IsCompleted && stream.ReleaseNext()) { }
                Assert.True(finished.IsCompleted, $"operation {pendAt}: the path waits on something other than its stream");
                posts += context.Posts;
                last = finished;
                if (!stream.Pended) return posts; // no operation {pendAt} in this run: each one has been the first to suspend
            }
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(before);
        }
    }

    private const int AcceptorHello = 8 + 2 + 1 + 1 + 32;

    private static byte[] Reply(byte flags)
    {
        var m = new byte[AcceptorHello];
        "KADEPLOY"u8.CopyTo(m);
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(8), ProtocolConstants.Version);
        m[11] = flags;
        RandomNumberGenerator.Fill(m.AsSpan(12));
        return m;
    }

    private static byte[] Refusal(int header, string reason)
    {
        var r = Encoding.UTF8.GetBytes(reason);
        var m = new byte[header + 2 + r.Length];
        m[header - 1] = 1;
        if (header > 1) { "KADEPLOY"u8.CopyTo(m); BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(8), ProtocolConstants.Version); }
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(header), (ushort)r.Length);
        r.CopyTo(m, header + 2);
        return m;
    }

    private static byte[] OpenerHello(byte flags, ushort version = ProtocolConstants.Version)
    {
        var m = new byte[46 + 3];
        "KADEPLOY"u8.CopyTo(m);
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(8), version);
        m[10] = (byte)HandshakeChannel.Control;
        m[11] = flags;
        RandomNumberGenerator.Fill(m.AsSpan(12, 32));
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(44), 3);
        "lab"u8.CopyTo(m.AsSpan(46));
        return m;
    }

    private static byte[] Proof(PresharedKey key, string label, byte[] openerHello, byte[] acceptorHello) =>
        HMACSHA256.HashData(key.Bytes, [.. Encoding.ASCII.GetBytes(label), .. SHA256.HashData([.. openerHello, .. acceptorHello])]);

    public static TheoryData<string> OpenerCases() => new() { "clear", "keyed", "refused", "wrong acceptor proof" };

    [Theory]
    [MemberData(nameof(OpenerCases))]
    public void TheOpenerNeverResumesOnTheCallersContext(string what)
    {
        using var key = what is "keyed" or "wrong acceptor proof" ? PresharedKey.Generate() : null;
        SteppedStream Connect(int pendAt)
        {
            byte[]? hello = null;
            return new SteppedStream(written =>
            {
                if (hello is not null) return []; // the opener's proof or refusal: no answer
                hello = written;
                if (what == "refused") return Refusal(11, "session is full");
                if (key is null) return Reply(0);
                var reply = Reply(1);
                return what == "keyed" ? [.. reply, .. Proof(key, "kd2 acceptor", hello, reply)] : [.. reply, .. new byte[32]];
            }, pendAt);
        }
        int posts = EveryFirstSuspension(Connect, s => Handshake.OpenAsync(s, HandshakeChannel.Control, "lab", key, "peer", default), out var last);
        Assert.Equal(what is "clear" or "keyed", last.IsCompletedSuccessfully);
        Assert.Equal(0, posts);
    }

    public static TheoryData<string> AcceptorCases() => new() { "clear", "keyed", "refusing", "refused by the opener" };

    [Theory]
    [MemberData(nameof(AcceptorCases))]
    public void TheAcceptorNeverResumesOnTheCallersContext(string what)
    {
        using var key = what is "keyed" or "refused by the opener" ? PresharedKey.Generate() : null;
        var hello = OpenerHello(key is null ? (byte)0 : (byte)1, what == "refusing" ? (ushort)9 : ProtocolConstants.Version);
        SteppedStream Connect(int pendAt)
        {
            var stream = new SteppedStream(written =>
                what == "keyed" && written.Length == AcceptorHello + 32 ? [0, .. Proof(key!, "kd2 opener", hello, written[..AcceptorHello])]
                : what == "refused by the opener" && written.Length == AcceptorHello + 32 ? Refusal(1, "wrong key")
                : [], pendAt);
            stream.Give(hello);
            return stream;
        }
        int posts = EveryFirstSuspension(Connect, s => Handshake.AcceptAsync(s, key, "lab", "peer", default), out var last);
        Assert.Equal(what is "clear" or "keyed", last.IsCompletedSuccessfully);
        Assert.Equal(0, posts);
    }

    [Fact]
    public void TheControlChannelNeverResumesOnTheCallersContext()
    {
        var frame = new ArrayBufferWriter<byte>();
        ControlCodec.Encode(new Welcome(1, 2, 3), frame);
        SteppedStream Connect(int pendAt)
        {
            var stream = new SteppedStream(_ => [], pendAt);
            stream.Give(frame.WrittenSpan.ToArray());
            stream.Give(frame.WrittenSpan.ToArray());
            return stream;
        }
        // Each operation of the channel started on its own, as a caller does: the context is the caller's at each call.
        int posts = EveryFirstSuspension(Connect, s => new ControlChannel(s).SendAsync(new Progress(1, 2), default), out var last);
        Assert.True(last.IsCompletedSuccessfully);
        posts += EveryFirstSuspension(Connect, s => new ControlChannel(s).ReceiveAsync(default), out last);
        Assert.True(last.IsCompletedSuccessfully);
        posts += EveryFirstSuspension(Connect, s => new ControlChannel(s).ExpectAsync<Welcome>(default), out last);
        Assert.True(last.IsCompletedSuccessfully);
        posts += EveryFirstSuspension(Connect, s => new ControlChannel(s).DisposeAsync().AsTask(), out last);
        Assert.True(last.IsCompletedSuccessfully);
        Assert.Equal(0, posts);
    }
}
