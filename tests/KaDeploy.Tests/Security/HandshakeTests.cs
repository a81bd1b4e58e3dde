using KaDeploy.Protocol;
using KaDeploy.Security;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Security;

public class HandshakeTests
{
    private static PresharedKey NewKey() => PresharedKey.Generate();

    private static async Task<(Task<HandshakeResult> Opener, Task<HandshakeResult> Acceptor, InMemoryConnection.End O, InMemoryConnection.End A)> Run(
        PresharedKey? openerKey, PresharedKey? acceptorKey, string session = "lab", string? expected = "lab")
    {
        var (o, a) = InMemoryConnection.Create();
        var opener = Task.Run(async () =>
        {
            try { return await Handshake.OpenAsync(o, HandshakeChannel.Control, session, openerKey, "server 198.18.0.1:30765", default); }
            finally { o.Dispose(); }
        });
        var acceptor = Task.Run(async () =>
        {
            try { return await Handshake.AcceptAsync(a, acceptorKey, expected, "198.18.0.7:41234", default); }
            finally { a.Dispose(); }
        });
        await Task.WhenAll(opener.ContinueWith(_ => { }), acceptor.ContinueWith(_ => { }));
        return (opener, acceptor, o, a);
    }

    [Fact]
    public async Task Same_key_authenticates_both_sides_and_their_ciphers_interoperate()
    {
        using var key = NewKey();
        var (o, a) = InMemoryConnection.Create();
        var opener = Handshake.OpenAsync(o, HandshakeChannel.Data, "lab", key, "parent", default);
        var acceptor = Handshake.AcceptAsync(a, key, "lab", "child", default);
        var ro = await opener;
        var ra = await acceptor;
        Assert.True(ro.Keyed && ra.Keyed);
        Assert.Equal(HandshakeChannel.Data, ra.Channel);
        await using var co = new ControlChannel(o, ro.Cipher);
        await using var ca = new ControlChannel(a, ra.Cipher);
        await co.SendAsync(new Progress(1, 2), default);
        Assert.Equal(new Progress(1, 2), await ca.ReceiveAsync(default));
        await ca.SendAsync(new Refuse("x"), default);
        Assert.Equal(new Refuse("x"), await co.ReceiveAsync(default));
    }

    [Fact]
    public async Task Wrong_key_is_refused_on_both_sides_with_the_peer_named()
    {
        using var k1 = NewKey();
        using var k2 = NewKey();
        var (opener, acceptor, _, _) = await Run(k1, k2);
        var eo = await Assert.ThrowsAsync<HandshakeException>(() => opener);
        var ea = await Assert.ThrowsAsync<HandshakeException>(() => acceptor);
        Assert.Contains("server 198.18.0.1:30765", eo.Message);
        Assert.Contains("failed authentication", eo.Message);
        Assert.Contains("198.18.0.7:41234", ea.Message);
        Assert.DoesNotContain('\n', eo.Message + ea.Message);
    }

    [Fact]
    public async Task Unkeyed_node_is_refused_by_a_keyed_server_and_knows_why()
    {
        using var k = NewKey();
        var (opener, acceptor, _, _) = await Run(null, k);
        var eo = await Assert.ThrowsAsync<HandshakeException>(() => opener);
        var ea = await Assert.ThrowsAsync<HandshakeException>(() => acceptor);
        Assert.Contains("requires a key", eo.Message);
        Assert.Contains("198.18.0.7:41234", ea.Message);
    }

    [Fact]
    public async Task Keyed_node_refuses_to_talk_in_clear_to_an_unkeyed_server()
    {
        using var k = NewKey();
        var (opener, acceptor, _, _) = await Run(k, null);
        var eo = await Assert.ThrowsAsync<HandshakeException>(() => opener);
        await Assert.ThrowsAsync<HandshakeException>(() => acceptor);
        Assert.Contains("has no key", eo.Message);
    }

    [Fact]
    public async Task Unkeyed_on_both_sides_still_connects()
    {
        var (opener, acceptor, _, _) = await Run(null, null);
        Assert.False((await opener).Keyed);
        Assert.False((await acceptor).Keyed);
    }

    [Fact]
    public async Task Another_session_is_refused()
    {
        var (opener, acceptor, _, _) = await Run(null, null, session: "other");
        Assert.Contains("session 'other'", (await Assert.ThrowsAsync<HandshakeException>(() => opener)).Message);
        await Assert.ThrowsAsync<HandshakeException>(() => acceptor);
    }

    [Fact]
    public async Task The_key_never_travels_and_every_connection_uses_fresh_nonces()
    {
        using var key = NewKey();
        var (opener1, _, o1, a1) = await Run(key, key);
        var (opener2, _, o2, a2) = await Run(key, key);
        (await opener1).Cipher!.Dispose();
        (await opener2).Cipher!.Dispose();
        var wire = o1.Sent.Concat(a1.Sent).Concat(o2.Sent).Concat(a2.Sent).ToArray();
        Assert.True(wire.AsSpan().IndexOf(key.Bytes[..8]) < 0, "key bytes on the wire");
        Assert.False(o1.Sent.SequenceEqual(o2.Sent));
        Assert.False(a1.Sent.AsSpan(^32..).SequenceEqual(a2.Sent.AsSpan(^32..)));
    }

    [Fact]
    public async Task A_recorded_opener_replayed_to_a_new_acceptor_fails()
    {
        using var key = NewKey();
        var (opener, _, recorded, _) = await Run(key, key);
        (await opener).Cipher!.Dispose();
        var (attacker, victim) = InMemoryConnection.Create();
        var accept = Handshake.AcceptAsync(victim, key, "lab", "198.18.0.66:1", default);
        await attacker.WriteAsync(recorded.Sent); // hello + the old proof: bound to the old acceptor nonce
        var e = await Assert.ThrowsAsync<HandshakeException>(() => accept);
        Assert.Contains("failed authentication", e.Message);
    }

    [Fact]
    public async Task Garbage_is_not_a_peer()
    {
        var (o, a) = InMemoryConnection.Create();
        var accept = Handshake.AcceptAsync(a, null, null, "198.18.0.9:5", default);
        await o.WriteAsync(new byte[64]);
        Assert.Contains("not a ka-deploy peer", (await Assert.ThrowsAsync<HandshakeException>(() => accept)).Message);
    }

    [Fact]
    public async Task A_silent_peer_times_out()
    {
        var (_, a) = InMemoryConnection.Create();
        var e = await Assert.ThrowsAsync<HandshakeException>(() => Handshake.AcceptAsync(a, null, null, "198.18.0.9:5", default, TimeSpan.FromMilliseconds(50)));
        Assert.Contains("timed out", e.Message);
    }
}
