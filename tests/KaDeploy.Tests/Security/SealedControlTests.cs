using System.Buffers.Binary;
using KaDeploy.Protocol;
using KaDeploy.Security;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Security;

/// <summary>Sealed control frames: what an attacker on the wire can do to them is detected.</summary>
public class SealedControlTests
{
    private static readonly ControlMessage[] Messages = [new Progress(1, 1), new Progress(2, 2), new Progress(3, 3)];

    /// <summary>Both sides of one keyed connection, and the sealed frames the opener sent.</summary>
    private static async Task<(ControlCipher Receiver, List<byte[]> Frames, ControlCipher Sender)> Sealed(PresharedKey key)
    {
        var (o, a) = InMemoryConnection.Create();
        var ro = Handshake.OpenAsync(o, HandshakeChannel.Control, "s", key, "a", default);
        var ra = await Handshake.AcceptAsync(a, key, "s", "o", default);
        var sender = (await ro).Cipher!;
        var frames = new List<byte[]>();
        var sink = new MemoryStream();
        var channel = new ControlChannel(sink, sender);
        foreach (var m in Messages)
        {
            long start = sink.Length;
            await channel.SendAsync(m, default);
            frames.Add(sink.ToArray()[(int)start..]);
        }
        return (ra.Cipher!, frames, sender);
    }

    private static async Task<List<ControlMessage>> Receive(ControlCipher cipher, IEnumerable<byte[]> frames)
    {
        var channel = new ControlChannel(new MemoryStream(frames.SelectMany(f => f).ToArray()), cipher);
        var got = new List<ControlMessage>();
        while (await channel.ReceiveAsync(default) is { } m) got.Add(m);
        return got;
    }

    [Fact]
    public async Task In_order_frames_open()
    {
        using var key = PresharedKey.Generate();
        var (receiver, frames, _) = await Sealed(key);
        Assert.Equal(Messages, await Receive(receiver, frames));
    }

    [Fact]
    public async Task A_sealed_frame_does_not_show_its_content()
    {
        using var key = PresharedKey.Generate();
        var (_, frames, _) = await Sealed(key);
        // Progress(3,3) in clear is type byte + two little-endian 3s; sealed, no such run appears.
        var clear = new byte[17];
        clear[0] = (byte)ControlType.Progress;
        BinaryPrimitives.WriteInt64LittleEndian(clear.AsSpan(1), 3);
        BinaryPrimitives.WriteInt64LittleEndian(clear.AsSpan(9), 3);
        Assert.True(frames[2].AsSpan().IndexOf(clear) < 0);
    }

    [Fact]
    public async Task Replayed_frame_fails()
    {
        using var key = PresharedKey.Generate();
        var (receiver, f, _) = await Sealed(key);
        var e = await Assert.ThrowsAsync<ProtocolException>(() => Receive(receiver, [f[0], f[0]]));
        Assert.Contains("failed authentication", e.Message);
    }

    [Fact]
    public async Task Reordered_frames_fail()
    {
        using var key = PresharedKey.Generate();
        var (receiver, f, _) = await Sealed(key);
        await Assert.ThrowsAsync<ProtocolException>(() => Receive(receiver, [f[1], f[0]]));
    }

    [Fact]
    public async Task A_dropped_frame_fails_the_next()
    {
        using var key = PresharedKey.Generate();
        var (receiver, f, _) = await Sealed(key);
        await Assert.ThrowsAsync<ProtocolException>(() => Receive(receiver, [f[0], f[2]]));
    }

    [Fact]
    public async Task Every_flipped_bit_fails()
    {
        using var key = PresharedKey.Generate();
        for (int i = 0; i < 8 * 45; i += 7)
        {
            var (receiver, f, _) = await Sealed(key);
            var bad = f[0].ToArray();
            if (i / 8 >= bad.Length) break;
            bad[i / 8] ^= (byte)(1 << (i % 8));
            await Assert.ThrowsAnyAsync<ProtocolException>(() => Receive(receiver, [bad]));
        }
    }

    [Fact]
    public async Task Frames_of_another_connection_with_the_same_key_fail()
    {
        using var key = PresharedKey.Generate();
        var (receiver, _, _) = await Sealed(key);
        var (_, other, _) = await Sealed(key);
        await Assert.ThrowsAsync<ProtocolException>(() => Receive(receiver, [other[0]]));
    }

    [Fact]
    public async Task A_frame_reflected_back_to_its_sender_fails()
    {
        using var key = PresharedKey.Generate();
        var (_, f, sender) = await Sealed(key);
        await Assert.ThrowsAsync<ProtocolException>(() => Receive(sender, [f[0]]));
    }

    [Fact]
    public async Task A_clear_frame_on_a_sealed_channel_fails()
    {
        using var key = PresharedKey.Generate();
        var (receiver, _, _) = await Sealed(key);
        var clear = new MemoryStream();
        await new ControlChannel(clear).SendAsync(new Progress(1, 1), default);
        await Assert.ThrowsAsync<ProtocolException>(() => Receive(receiver, [clear.ToArray()]));
    }
}
