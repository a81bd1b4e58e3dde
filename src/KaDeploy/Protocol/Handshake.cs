using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using KaDeploy.Security;

namespace KaDeploy.Protocol;

/// <summary>What a connection carries after its handshake.</summary>
public enum HandshakeChannel : byte
{
    /// <summary>Node to server: registration, plan, progress.</summary>
    Control = 1,
    /// <summary>Child to parent: the data link.</summary>
    Data = 2,
    /// <summary><c>ka-deploy go</c> (or <c>ka-d-client -g</c>) to a waiting server.</summary>
    Go = 3,
}

/// <summary>The outcome of a successful handshake.</summary>
/// <param name="Channel">What the opener said the connection is for.</param>
/// <param name="Session">The opener's session name.</param>
/// <param name="Cipher">Seals this side's control frames when keyed; null on an unkeyed connection.</param>
public sealed record HandshakeResult(HandshakeChannel Channel, string Session, ControlCipher? Cipher)
{
    /// <summary>Both sides proved they hold the same pre-shared key.</summary>
    public bool Keyed => Cipher is not null;
}

/// <summary>A peer that failed or refused the handshake; the message is the one line to log.</summary>
public sealed class HandshakeException : KaDeployException
{
    public HandshakeException(string message) : base(message) { }
}

/// <summary>
/// The first bytes of every connection (docs/protocol.md section 2): both sides send fresh 32-byte
/// nonces, and with a pre-shared key each proves it holds the key with an HMAC-SHA256 over the
/// hash of both hellos (the acceptor first, then the opener), so the key never travels, a recorded
/// exchange is useless on a new connection, and a peer without the key learns nothing it can reuse.
/// A keyed side and an unkeyed side never talk. Every failure throws <see cref="HandshakeException"/>
/// naming the peer; the other side gets a refusal with the reason where the protocol can still say it.
/// <code>
/// opener   → acceptor: "KADEPLOY" u16 version u8 channel u8 flags(bit0 keyed) nonce_o[32] u16 len session
/// acceptor → opener  : "KADEPLOY" u16 version u8 status(0 ok | 1 refused: u16 len reason, end)
///                      u8 flags nonce_a[32] [keyed: HMAC(K, "kd2 acceptor" || T)]
/// opener   → acceptor: [keyed: u8 status(0 ok: HMAC(K, "kd2 opener" || T) | 1 refused: u16 len reason)]
/// T = SHA-256(opener hello || acceptor hello without its MAC)
/// </code>
/// </summary>
public static class Handshake
{
    /// <summary>Bytes of each side's nonce.</summary>
    public const int NonceSize = 32;

    private const int MacSize = 32;
    private const int MaxSession = 255;
    private const int MaxReason = 1024;
    private const byte FlagKeyed = 1;
    private const int OpenerFixed = 8 + 2 + 1 + 1 + NonceSize + 2;

    /// <summary>Time a peer has to complete the handshake: a silent connection must not hold a listener's slot.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(10);

    /// <summary>The side that connected: says what the connection is for and, keyed, checks the acceptor first.</summary>
    /// <param name="stream">The fresh connection.</param>
    /// <param name="channel">What it will carry.</param>
    /// <param name="session">The session name.</param>
    /// <param name="key">The pre-shared key, or null for an unkeyed session.</param>
    /// <param name="peer">The acceptor's name and address, for messages ("server 198.18.0.1:30765").</param>
    /// <param name="cancellationToken">Cancels the handshake.</param>
    /// <param name="timeout">Bound on the whole exchange (default <see cref="DefaultTimeout"/>).</param>
    public static async Task<HandshakeResult> OpenAsync(Stream stream, HandshakeChannel channel, string session, PresharedKey? key,
        string peer, CancellationToken cancellationToken, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(session);
        var sessionBytes = Encoding.UTF8.GetBytes(session);
        if (sessionBytes.Length > MaxSession) throw new KaDeployException($"session name longer than {MaxSession} bytes");
        using var cts = Bound(cancellationToken, timeout);
        try
        {
            var hello = new byte[OpenerFixed + sessionBytes.Length];
            ProtocolConstants.Magic.CopyTo(hello);
            BinaryPrimitives.WriteUInt16LittleEndian(hello.AsSpan(8), ProtocolConstants.Version);
            hello[10] = (byte)channel;
            hello[11] = key is null ? (byte)0 : FlagKeyed;
            RandomNumberGenerator.Fill(hello.AsSpan(12, NonceSize));
            BinaryPrimitives.WriteUInt16LittleEndian(hello.AsSpan(12 + NonceSize), (ushort)sessionBytes.Length);
            sessionBytes.CopyTo(hello, OpenerFixed);
            await stream.WriteAsync(hello, cts.Token).ConfigureAwait(false);
            await stream.FlushAsync(cts.Token).ConfigureAwait(false);

            var head = new byte[8 + 2 + 1];
            await ReadExactly(stream, head, peer, cts.Token).ConfigureAwait(false);
            if (!head.AsSpan(0, 8).SequenceEqual(ProtocolConstants.Magic))
                throw new HandshakeException($"{peer} is not a ka-deploy peer (bad handshake magic)");
            ushort version = BinaryPrimitives.ReadUInt16LittleEndian(head.AsSpan(8));
            if (head[10] == 1)
                throw new HandshakeException($"{peer} refused the connection: {await ReadReason(stream, peer, cts.Token).ConfigureAwait(false)}");
            if (head[10] != 0) throw new HandshakeException($"{peer} sent handshake status {head[10]}");
            if (version != ProtocolConstants.Version)
                throw new HandshakeException($"{peer} speaks protocol version {version}, expected {ProtocolConstants.Version}");
            var rest = new byte[1 + NonceSize];
            await ReadExactly(stream, rest, peer, cts.Token).ConfigureAwait(false);
            bool peerKeyed = (rest[0] & FlagKeyed) != 0;
            if (peerKeyed != key is not null)
                throw new HandshakeException(key is null
                    ? $"{peer} requires a key and this side has none (--key-file)"
                    : $"{peer} has no key but this side was given one: refusing to talk in clear");
            if (key is null) return new HandshakeResult(channel, session, null);

            var mac = new byte[MacSize];
            await ReadExactly(stream, mac, peer, cts.Token).ConfigureAwait(false);
            var transcript = Transcript(hello, head, rest);
            if (!CryptographicOperations.FixedTimeEquals(mac, Mac(key, "kd2 acceptor"u8, transcript)))
            {
                await TrySend(stream, Refusal(1, "the acceptor failed authentication (wrong key)"), cts.Token).ConfigureAwait(false);
                throw new HandshakeException($"{peer} failed authentication: it does not hold this key (wrong key, or a rogue peer)");
            }
            var final = new byte[1 + MacSize];
            Mac(key, "kd2 opener"u8, transcript).CopyTo(final, 1);
            await stream.WriteAsync(final, cts.Token).ConfigureAwait(false);
            await stream.FlushAsync(cts.Token).ConfigureAwait(false);
            return new HandshakeResult(channel, session, ControlCipher.Derive(key, hello.AsSpan(12, NonceSize), rest.AsSpan(1), isOpener: true));
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new HandshakeException($"{peer}: handshake timed out");
        }
        catch (IOException e)
        {
            throw new HandshakeException($"{peer}: connection lost during the handshake ({e.Message})");
        }
    }

    /// <summary>The side that accepted: checks version, key mode and (optionally) session, keyed proves itself first.</summary>
    /// <param name="stream">The accepted connection.</param>
    /// <param name="key">The pre-shared key, or null for an unkeyed session.</param>
    /// <param name="expectedSession">Refuse openers of another session; null accepts any.</param>
    /// <param name="peer">The opener's address, for messages ("198.18.0.7:41234").</param>
    /// <param name="cancellationToken">Cancels the handshake.</param>
    /// <param name="timeout">Bound on the whole exchange (default <see cref="DefaultTimeout"/>).</param>
    public static async Task<HandshakeResult> AcceptAsync(Stream stream, PresharedKey? key, string? expectedSession, string peer,
        CancellationToken cancellationToken, TimeSpan? timeout = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        using var cts = Bound(cancellationToken, timeout);
        try
        {
            var fixedPart = new byte[OpenerFixed];
            await ReadExactly(stream, fixedPart, peer, cts.Token).ConfigureAwait(false);
            if (!fixedPart.AsSpan(0, 8).SequenceEqual(ProtocolConstants.Magic))
                throw new HandshakeException($"{peer} is not a ka-deploy peer (bad handshake magic)");
            ushort version = BinaryPrimitives.ReadUInt16LittleEndian(fixedPart.AsSpan(8));
            var channel = (HandshakeChannel)fixedPart[10];
            bool peerKeyed = (fixedPart[11] & FlagKeyed) != 0;
            int sessionLength = BinaryPrimitives.ReadUInt16LittleEndian(fixedPart.AsSpan(12 + NonceSize));
            if (version != ProtocolConstants.Version)
                await Refuse(stream, peer, $"protocol version {version}, expected {ProtocolConstants.Version}", cts.Token).ConfigureAwait(false);
            if (!Enum.IsDefined(channel))
                await Refuse(stream, peer, $"unknown channel {(byte)channel}", cts.Token).ConfigureAwait(false);
            if (sessionLength > MaxSession)
                await Refuse(stream, peer, $"session name of {sessionLength} bytes (limit {MaxSession})", cts.Token).ConfigureAwait(false);
            var sessionBytes = new byte[sessionLength];
            await ReadExactly(stream, sessionBytes, peer, cts.Token).ConfigureAwait(false);
            string session;
            try { session = new UTF8Encoding(false, true).GetString(sessionBytes); }
            catch (DecoderFallbackException) { await Refuse(stream, peer, "session name is not UTF-8", cts.Token).ConfigureAwait(false); throw; }
            if (peerKeyed != key is not null)
                await Refuse(stream, peer, key is null
                    ? "the acceptor has no key but the opener was given one (--key-file on one side only)"
                    : "this session requires a key and the opener has none (--key-file)", cts.Token).ConfigureAwait(false);
            if (expectedSession is not null && session != expectedSession)
                await Refuse(stream, peer, $"session '{session}' is not this side's session '{expectedSession}'", cts.Token).ConfigureAwait(false);

            var head = new byte[8 + 2 + 1];
            ProtocolConstants.Magic.CopyTo(head);
            BinaryPrimitives.WriteUInt16LittleEndian(head.AsSpan(8), ProtocolConstants.Version);
            var rest = new byte[1 + NonceSize];
            rest[0] = key is null ? (byte)0 : FlagKeyed;
            RandomNumberGenerator.Fill(rest.AsSpan(1));
            var hello = new byte[OpenerFixed + sessionLength];
            fixedPart.CopyTo(hello, 0);
            sessionBytes.CopyTo(hello, OpenerFixed);
            byte[]? transcript = key is null ? null : Transcript(hello, head, rest);
            var reply = new byte[head.Length + rest.Length + (key is null ? 0 : MacSize)];
            head.CopyTo(reply, 0);
            rest.CopyTo(reply, head.Length);
            if (key is not null) Mac(key, "kd2 acceptor"u8, transcript!).CopyTo(reply, head.Length + rest.Length);
            await stream.WriteAsync(reply, cts.Token).ConfigureAwait(false);
            await stream.FlushAsync(cts.Token).ConfigureAwait(false);
            if (key is null) return new HandshakeResult(channel, session, null);

            var status = new byte[1];
            await ReadExactly(stream, status, peer, cts.Token, "before proving it holds the key (wrong key, or not a ka-deploy peer)").ConfigureAwait(false);
            if (status[0] == 1)
                throw new HandshakeException($"{peer} refused this side: {await ReadReason(stream, peer, cts.Token).ConfigureAwait(false)}");
            if (status[0] != 0) throw new HandshakeException($"{peer} sent handshake status {status[0]}");
            var mac = new byte[MacSize];
            await ReadExactly(stream, mac, peer, cts.Token).ConfigureAwait(false);
            if (!CryptographicOperations.FixedTimeEquals(mac, Mac(key, "kd2 opener"u8, transcript!)))
                throw new HandshakeException($"{peer} failed authentication: it does not hold this key (wrong key, or a rogue peer)");
            return new HandshakeResult(channel, session, ControlCipher.Derive(key, fixedPart.AsSpan(12, NonceSize), rest.AsSpan(1), isOpener: false));
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new HandshakeException($"{peer}: handshake timed out");
        }
        catch (IOException e)
        {
            throw new HandshakeException($"{peer}: connection lost during the handshake ({e.Message})");
        }
    }

    private static CancellationTokenSource Bound(CancellationToken cancellationToken, TimeSpan? timeout)
    {
        var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout ?? DefaultTimeout);
        return cts;
    }

    private static byte[] Transcript(byte[] openerHello, byte[] head, byte[] rest)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(openerHello);
        sha.AppendData(head);
        sha.AppendData(rest);
        return sha.GetHashAndReset();
    }

    private static byte[] Mac(PresharedKey key, ReadOnlySpan<byte> label, byte[] transcript)
    {
        Span<byte> input = stackalloc byte[label.Length + transcript.Length];
        label.CopyTo(input);
        transcript.CopyTo(input[label.Length..]);
        return HMACSHA256.HashData(key.Bytes, input);
    }

    private static byte[] Refusal(int headerBytes, string reason)
    {
        var r = Encoding.UTF8.GetBytes(reason);
        var m = new byte[headerBytes + 2 + r.Length];
        m[headerBytes - 1] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(headerBytes), (ushort)r.Length);
        r.CopyTo(m, headerBytes + 2);
        return m;
    }

    // Acceptor's refusal: its hello head with status 1 and the reason, then the exception for our log.
    private static async Task Refuse(Stream stream, string peer, string reason, CancellationToken cancellationToken)
    {
        var m = Refusal(8 + 2 + 1, reason);
        ProtocolConstants.Magic.CopyTo(m);
        BinaryPrimitives.WriteUInt16LittleEndian(m.AsSpan(8), ProtocolConstants.Version);
        await TrySend(stream, m, cancellationToken).ConfigureAwait(false);
        throw new HandshakeException($"refused {peer}: {reason}");
    }

    // A refusal is a courtesy: the peer may already be gone, and our own one-line error matters more.
    private static async Task TrySend(Stream stream, byte[] message, CancellationToken cancellationToken)
    {
        try
        {
            await stream.WriteAsync(message, cancellationToken).ConfigureAwait(false);
            await stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (IOException) { }
        catch (ObjectDisposedException) { }
    }

    private static async Task<string> ReadReason(Stream stream, string peer, CancellationToken cancellationToken)
    {
        var len = new byte[2];
        await ReadExactly(stream, len, peer, cancellationToken).ConfigureAwait(false);
        int n = BinaryPrimitives.ReadUInt16LittleEndian(len);
        if (n > MaxReason) throw new HandshakeException($"{peer} refused with a {n}-byte reason (limit {MaxReason})");
        var reason = new byte[n];
        await ReadExactly(stream, reason, peer, cancellationToken).ConfigureAwait(false);
        // The reason is shown to an operator: no control characters from a hostile peer reach the terminal.
        var text = Encoding.UTF8.GetString(reason);
        return string.Create(text.Length, text, (span, t) => { for (int i = 0; i < t.Length; i++) span[i] = char.IsControl(t[i]) ? '?' : t[i]; });
    }

    private static async Task ReadExactly(Stream stream, byte[] buffer, string peer, CancellationToken cancellationToken, string? when = null)
    {
        int got = await stream.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
        if (got < buffer.Length)
            throw new HandshakeException($"{peer} closed the connection during the handshake{(when is null ? "" : " " + when)}");
    }
}
