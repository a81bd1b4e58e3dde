using System.Buffers.Binary;
using System.Security.Cryptography;
using KaDeploy.Protocol;

namespace KaDeploy.Security;

/// <summary>
/// Seals the data frames of one session at the server and opens them on every node
/// (docs/protocol.md section 3). AES-256-GCM under the session's stream key (32 random bytes made
/// per session, handed to each node inside its sealed Plan); nonce = u32 stream id || u64 offset,
/// with the offset's top bit set for the End frame so that no two frames of a stream share a
/// nonce; associated data = the whole 32-byte header (check field 0). So a frame replayed at
/// another offset, moved to another place, cut short, taken from another session, or altered in
/// one header or payload bit fails to open. AES-GCM is System.Security.Cryptography's (OpenSSL with
/// AES-NI/VAES here): no native library to ship in a network-boot image; bench/aead measured it
/// against ChaCha20-Poly1305 and AEGIS. One instance per producer or receiver: not thread-safe.
/// </summary>
public sealed class StreamCipher : IDisposable
{
    /// <summary>Bytes of a stream key.</summary>
    public const int KeySize = 32;

    private readonly AesGcm _aes;
    private readonly uint _streamId;
    private readonly byte[] _nonce = new byte[12];

    /// <param name="streamKey">The session's 32-byte stream key.</param>
    /// <param name="streamId">The session's random stream id.</param>
    public StreamCipher(ReadOnlySpan<byte> streamKey, uint streamId)
    {
        if (streamKey.Length != KeySize) throw new ArgumentException($"a stream key is {KeySize} bytes", nameof(streamKey));
        _aes = new AesGcm(streamKey, DataFrameHeader.TagSize);
        _streamId = streamId;
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
        if (plaintext.Length > DataFrameHeader.MaxSealedChunk) throw new ArgumentException("chunk larger than a sealed frame holds", nameof(plaintext));
        var header = new DataFrameHeader(type, plaintext.Length + DataFrameHeader.TagSize, offset, 0, DataFrameFlags.Sealed);
        header.Write(frame);
        SetNonce(type, offset);
        var body = frame.Slice(DataFrameHeader.Size, plaintext.Length);
        _aes.Encrypt(_nonce, plaintext, body, frame.Slice(DataFrameHeader.Size + plaintext.Length, DataFrameHeader.TagSize), frame[..DataFrameHeader.Size]);
        return header;
    }

    /// <summary>
    /// Opens a received sealed frame (<paramref name="frame"/> = header || ciphertext || tag, as read
    /// from the wire) into <paramref name="plaintext"/>; throws <see cref="ProtocolException"/> if it was
    /// not sealed by this session's server for exactly this place in the stream. On failure the
    /// plaintext buffer is wiped, so no unauthenticated byte can be published.
    /// </summary>
    public void Open(DataFrameHeader header, ReadOnlySpan<byte> frame, Span<byte> plaintext)
    {
        if (!header.IsSealed) throw new ProtocolException($"clear {header.Type} frame at offset {header.Offset} in a keyed session");
        if (header.Checksum != 0) throw new ProtocolException($"sealed frame at offset {header.Offset} has a check value");
        int n = header.PlaintextLength;
        SetNonce(header.Type, header.Offset);
        var body = frame.Slice(DataFrameHeader.Size, n);
        try
        {
            _aes.Decrypt(_nonce, body, frame.Slice(DataFrameHeader.Size + n, DataFrameHeader.TagSize), plaintext[..n], frame[..DataFrameHeader.Size]);
        }
        catch (AuthenticationTagMismatchException)
        {
            CryptographicOperations.ZeroMemory(plaintext[..n]);
            throw new ProtocolException($"{header.Type} frame at offset {header.Offset} failed authentication (altered, misplaced, or not from this session's server)");
        }
    }

    private void SetNonce(DataFrameType type, long offset)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(_nonce, _streamId);
        ulong n = (ulong)offset;
        // End frames sit at the stream length, where no Data frame starts; the top bit keeps them apart anyway.
        if (type != DataFrameType.Data) n |= 1UL << 63;
        if (type == DataFrameType.Abort) n |= 1UL << 62;
        BinaryPrimitives.WriteUInt64LittleEndian(_nonce.AsSpan(4), n);
    }

    /// <summary>Releases the key.</summary>
    public void Dispose() => _aes.Dispose();
}
