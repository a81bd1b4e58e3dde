using System.Buffers.Binary;
using System.Security.Cryptography;
using KaDeploy.Protocol;

namespace KaDeploy.Security;

/// <summary>The AEAD that seals a keyed session's data frames; the server chooses it, the Plan carries it (docs/protocol.md section 3).</summary>
public enum StreamCipherKind : byte
{
    /// <summary>AES-256-GCM from System.Security.Cryptography (OpenSSL): 12-byte nonce, 16-byte tag. Needs nothing beside the binary.</summary>
    Aes256Gcm = 1,
    /// <summary>AEGIS-256 from libsodium &gt;= 1.0.19, shipped beside the binary: 32-byte nonce, 32-byte tag; about twice as fast as AES-256-GCM here (bench/README.md).</summary>
    Aegis256 = 2,
    /// <summary>AEGIS-128L from the same libsodium: 128-bit key (the stream key's first 16 bytes), 16-byte nonce, 32-byte tag; about 1.6 times as fast as AEGIS-256.</summary>
    Aegis128L = 3,
}

/// <summary>
/// Seals the data frames of one session at the server and opens them on every node
/// (docs/protocol.md section 3), with the session's <see cref="StreamCipherKind"/> under its stream key
/// (32 random bytes made per session, handed to each node inside its sealed Plan). Nonce = u32 stream id ||
/// u64 offset (zero-padded to AEGIS-256's 32 bytes), with the offset's top bit set for the End frame so that
/// no two frames of a stream share a nonce; associated data = the whole 32-byte header (check field 0, flags
/// naming the cipher). So a frame replayed at another offset, moved to another place, cut short, taken from
/// another session, sealed with another cipher, or altered in one header or payload bit fails to open.
/// Both ciphers work in place of the slot: no per-frame allocation. One instance per producer or receiver:
/// not thread-safe.
/// </summary>
public sealed class StreamCipher : IDisposable
{
    /// <summary>Bytes of a stream key.</summary>
    public const int KeySize = 32;

    private readonly StreamAead _aead;
    private readonly uint _streamId;
    private readonly DataFrameFlags _flags;

    /// <param name="streamKey">The session's 32-byte stream key.</param>
    /// <param name="streamId">The session's random stream id.</param>
    /// <param name="kind">The AEAD; AEGIS-256 throws <see cref="CipherUnavailableException"/> where libsodium with AEGIS does not load.</param>
    public StreamCipher(ReadOnlySpan<byte> streamKey, uint streamId, StreamCipherKind kind = StreamCipherKind.Aes256Gcm)
        : this(streamKey, streamId, kind, kind is StreamCipherKind.Aegis256 or StreamCipherKind.Aegis128L
            ? Libsodium.Load(out string why) ?? throw new CipherUnavailableException(kind, why) : null)
    {
    }

    // libsodium: the library an AEGIS cipher runs on (null for AES-256-GCM).
    internal StreamCipher(ReadOnlySpan<byte> streamKey, uint streamId, StreamCipherKind kind, Libsodium? libsodium)
    {
        if (streamKey.Length != KeySize) throw new ArgumentException($"a stream key is {KeySize} bytes", nameof(streamKey));
        _aead = kind switch
        {
            StreamCipherKind.Aes256Gcm => new AesGcmAead(streamKey),
            StreamCipherKind.Aegis256 or StreamCipherKind.Aegis128L =>
                new AegisAead(kind, streamKey, libsodium ?? throw new ArgumentNullException(nameof(libsodium))),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown stream cipher"),
        };
        Kind = kind;
        _streamId = streamId;
        _flags = FlagsOf(kind);
    }

    /// <summary>
    /// The cipher a node opens its Plan's frames with; <paramref name="libsodiumCandidates"/> (tests) replaces the
    /// shipped places libsodium is looked for.
    /// </summary>
    internal static StreamCipher Create(ReadOnlySpan<byte> streamKey, uint streamId, StreamCipherKind kind, IReadOnlyList<string>? libsodiumCandidates)
    {
        if (kind == StreamCipherKind.Aes256Gcm || libsodiumCandidates is null) return new StreamCipher(streamKey, streamId, kind);
        var (library, why) = Libsodium.TryLoad(libsodiumCandidates);
        return new StreamCipher(streamKey, streamId, kind, library ?? throw new CipherUnavailableException(kind, why));
    }

    /// <summary>The AEAD in use.</summary>
    public StreamCipherKind Kind { get; }

    /// <summary>Bytes the tag adds to each frame.</summary>
    public int TagSize => _aead.TagSize;

    /// <summary>Largest plaintext chunk of one sealed Data frame: with the tag, it fills a frame of <see cref="ProtocolConstants.MaxChunkPayload"/>.</summary>
    public int MaxChunk => ProtocolConstants.MaxChunkPayload - _aead.TagSize;

    /// <summary>The name an operator reads ("AEGIS-256").</summary>
    public static string NameOf(StreamCipherKind kind) => kind switch
    {
        StreamCipherKind.Aes256Gcm => "AES-256-GCM",
        StreamCipherKind.Aegis256 => "AEGIS-256",
        StreamCipherKind.Aegis128L => "AEGIS-128L",
        _ => $"cipher {(byte)kind}",
    };

    /// <summary>The data-frame flags of a frame sealed with <paramref name="kind"/>.</summary>
    public static DataFrameFlags FlagsOf(StreamCipherKind kind) => kind switch
    {
        StreamCipherKind.Aegis256 => DataFrameFlags.Sealed | DataFrameFlags.Aegis256,
        StreamCipherKind.Aegis128L => DataFrameFlags.Sealed | DataFrameFlags.Aegis128L,
        _ => DataFrameFlags.Sealed,
    };

    /// <summary>Whether this process can seal and open with <paramref name="kind"/>; if not, <paramref name="reason"/> says why in one line.</summary>
    public static bool IsAvailable(StreamCipherKind kind, out string reason)
    {
        reason = "";
        return kind == StreamCipherKind.Aes256Gcm || Libsodium.Load(out reason) is not null;
    }

    /// <summary>A fresh stream key and id for a new session.</summary>
    public static (byte[] Key, uint StreamId) NewStream()
    {
        var key = RandomNumberGenerator.GetBytes(KeySize);
        return (key, BinaryPrimitives.ReadUInt32LittleEndian(RandomNumberGenerator.GetBytes(4)));
    }

    /// <summary>
    /// Seals one frame whose plaintext is already in place: <paramref name="frame"/> is the slot
    /// (header space, then room for ciphertext and tag), <paramref name="plaintext"/> the chunk (it may
    /// lie elsewhere, and stays as it is). Writes header, ciphertext and tag; returns the header.
    /// </summary>
    public DataFrameHeader Seal(DataFrameType type, long offset, ReadOnlySpan<byte> plaintext, Span<byte> frame)
    {
        if (type == DataFrameType.Data && plaintext.IsEmpty) throw new ArgumentException("an empty Data frame is never sealed", nameof(plaintext));
        if (plaintext.Length > MaxChunk) throw new ArgumentException("chunk larger than a sealed frame holds", nameof(plaintext));
        int tag = _aead.TagSize;
        var header = new DataFrameHeader(type, plaintext.Length + tag, offset, 0, _flags);
        header.Write(frame);
        Span<byte> nonce = stackalloc byte[_aead.NonceSize];
        SetNonce(nonce, type, offset);
        _aead.Seal(nonce, plaintext, frame.Slice(DataFrameHeader.Size, plaintext.Length),
            frame.Slice(DataFrameHeader.Size + plaintext.Length, tag), frame[..DataFrameHeader.Size]);
        return header;
    }

    /// <summary>
    /// Opens a received sealed frame (<paramref name="frame"/> = header || ciphertext || tag, as read
    /// from the wire) into <paramref name="plaintext"/>; throws <see cref="ProtocolException"/> if it was
    /// not sealed by this session's server, with this session's cipher, for exactly this place in the
    /// stream. On failure the plaintext buffer is wiped, so no unauthenticated byte can be published.
    /// </summary>
    public void Open(DataFrameHeader header, ReadOnlySpan<byte> frame, Span<byte> plaintext)
    {
        if (!header.IsSealed) throw new ProtocolException($"clear {header.Type} frame at offset {header.Offset} in a keyed session");
        if (header.Flags != _flags)
            throw new ProtocolException($"{header.Type} frame at offset {header.Offset} is sealed with {NameOf(KindOf(header.Flags))}, this session uses {NameOf(Kind)}");
        if (header.Checksum != 0) throw new ProtocolException($"sealed frame at offset {header.Offset} has a check value");
        int n = header.PlaintextLength;
        Span<byte> nonce = stackalloc byte[_aead.NonceSize];
        SetNonce(nonce, header.Type, header.Offset);
        var body = frame.Slice(DataFrameHeader.Size, n);
        if (!_aead.Open(nonce, body, frame.Slice(DataFrameHeader.Size + n, _aead.TagSize), plaintext[..n], frame[..DataFrameHeader.Size]))
        {
            CryptographicOperations.ZeroMemory(plaintext[..n]);
            throw new ProtocolException($"{header.Type} frame at offset {header.Offset} failed authentication (altered, misplaced, or not from this session's server)");
        }
    }

    private static StreamCipherKind KindOf(DataFrameFlags flags) =>
        (flags & DataFrameFlags.Aegis256) != 0 ? StreamCipherKind.Aegis256
        : (flags & DataFrameFlags.Aegis128L) != 0 ? StreamCipherKind.Aegis128L : StreamCipherKind.Aes256Gcm;

    private void SetNonce(Span<byte> nonce, DataFrameType type, long offset)
    {
        nonce.Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(nonce, _streamId);
        ulong n = (ulong)offset;
        // End frames sit at the stream length, where no Data frame starts; the top bit keeps them apart anyway.
        if (type != DataFrameType.Data) n |= 1UL << 63;
        if (type == DataFrameType.Abort) n |= 1UL << 62;
        BinaryPrimitives.WriteUInt64LittleEndian(nonce[4..], n);
    }

    /// <summary>Releases the key.</summary>
    public void Dispose() => _aead.Dispose();

    /// <summary>One AEAD under one key; seal and open with a detached tag, plaintext and ciphertext in separate buffers.</summary>
    private abstract class StreamAead : IDisposable
    {
        public abstract int NonceSize { get; }
        public abstract int TagSize { get; }
        public abstract void Seal(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> plaintext, Span<byte> ciphertext, Span<byte> tag, ReadOnlySpan<byte> associatedData);
        public abstract bool Open(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> ciphertext, ReadOnlySpan<byte> tag, Span<byte> plaintext, ReadOnlySpan<byte> associatedData);
        public abstract void Dispose();
    }

    private sealed class AesGcmAead(ReadOnlySpan<byte> key) : StreamAead
    {
        private readonly AesGcm _aes = new(key, DataFrameHeader.TagSize);
        public override int NonceSize => 12;
        public override int TagSize => DataFrameHeader.TagSize;

        public override void Seal(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> plaintext, Span<byte> ciphertext, Span<byte> tag, ReadOnlySpan<byte> associatedData) =>
            _aes.Encrypt(nonce, plaintext, ciphertext, tag, associatedData);

        public override bool Open(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> ciphertext, ReadOnlySpan<byte> tag, Span<byte> plaintext, ReadOnlySpan<byte> associatedData)
        {
            try { _aes.Decrypt(nonce, ciphertext, tag, plaintext, associatedData); return true; }
            catch (AuthenticationTagMismatchException) { return false; }
        }

        public override void Dispose() => _aes.Dispose();
    }

    private sealed class AegisAead : StreamAead
    {
        private readonly Libsodium _sodium;
        private readonly bool _128L;
        // Pinned so the key is never copied around by the GC, and wiped on Dispose. AEGIS-128L takes the stream key's
        // first 16 bytes (the key is 32 random bytes made for this session alone).
        private readonly byte[] _key;

        public AegisAead(StreamCipherKind kind, ReadOnlySpan<byte> key, Libsodium sodium)
        {
            _sodium = sodium;
            _128L = kind == StreamCipherKind.Aegis128L;
            _key = GC.AllocateUninitializedArray<byte>(_128L ? Libsodium.Aegis128LKeySize : Libsodium.AegisKeySize, pinned: true);
            key[.._key.Length].CopyTo(_key);
        }

        public override int NonceSize => _128L ? Libsodium.Aegis128LNonceSize : Libsodium.AegisNonceSize;
        public override int TagSize => Libsodium.AegisTagSize;

        public override void Seal(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> plaintext, Span<byte> ciphertext, Span<byte> tag, ReadOnlySpan<byte> associatedData) =>
            _sodium.Seal(_128L, _key, nonce, plaintext, ciphertext, tag, associatedData);

        public override bool Open(ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> ciphertext, ReadOnlySpan<byte> tag, Span<byte> plaintext, ReadOnlySpan<byte> associatedData) =>
            _sodium.Open(_128L, _key, nonce, ciphertext, tag, plaintext, associatedData);

        public override void Dispose() => CryptographicOperations.ZeroMemory(_key);
    }
}

/// <summary>This process cannot run the session's stream cipher; the message is the one line to log.</summary>
public sealed class CipherUnavailableException : KaDeployException
{
    /// <summary>The cipher that could not be set up.</summary>
    public StreamCipherKind Kind { get; }

    /// <param name="kind">The cipher.</param>
    /// <param name="reason">Why (from <see cref="Libsodium.TryLoad"/>).</param>
    public CipherUnavailableException(StreamCipherKind kind, string reason) : base($"cannot run {StreamCipher.NameOf(kind)}: {reason}") => Kind = kind;
}
