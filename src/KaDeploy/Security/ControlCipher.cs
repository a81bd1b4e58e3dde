using System.Buffers.Binary;
using System.Security.Cryptography;
using KaDeploy.Protocol;

namespace KaDeploy.Security;

/// <summary>
/// Seals and opens the control frames of one authenticated connection (docs/protocol.md section 2):
/// AES-256-GCM under a per-direction key derived from the pre-shared key and both handshake nonces,
/// nonce = 4 zero bytes || u64 frame counter of that direction, associated data = the frame's
/// 4-byte length prefix. A replayed, reordered, dropped, truncated or altered frame fails the tag
/// (the receiver's counter no longer matches the sender's), and frames of another connection were
/// sealed under other keys.
/// </summary>
public sealed class ControlCipher : IDisposable
{
    /// <summary>Bytes the tag adds to every sealed frame.</summary>
    public const int TagSize = 16;

    private readonly AesGcm _send;
    private readonly AesGcm _receive;
    private ulong _sendCounter;
    private ulong _receiveCounter;

    internal ControlCipher(ReadOnlySpan<byte> sendKey, ReadOnlySpan<byte> receiveKey)
    {
        _send = new AesGcm(sendKey, TagSize);
        _receive = new AesGcm(receiveKey, TagSize);
    }

    /// <summary>
    /// Derives both directions' keys from the handshake (HKDF-SHA256, salt = nonce_o || nonce_a) and
    /// returns the cipher for one side.
    /// </summary>
    internal static ControlCipher Derive(PresharedKey key, ReadOnlySpan<byte> openerNonce, ReadOnlySpan<byte> acceptorNonce, bool isOpener)
    {
        Span<byte> salt = stackalloc byte[openerNonce.Length + acceptorNonce.Length];
        openerNonce.CopyTo(salt);
        acceptorNonce.CopyTo(salt[openerNonce.Length..]);
        Span<byte> toAcceptor = stackalloc byte[32];
        Span<byte> toOpener = stackalloc byte[32];
        HKDF.DeriveKey(HashAlgorithmName.SHA256, key.Bytes, toAcceptor, salt, "kd2 control o->a"u8);
        HKDF.DeriveKey(HashAlgorithmName.SHA256, key.Bytes, toOpener, salt, "kd2 control a->o"u8);
        try
        {
            return isOpener ? new ControlCipher(toAcceptor, toOpener) : new ControlCipher(toOpener, toAcceptor);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(toAcceptor);
            CryptographicOperations.ZeroMemory(toOpener);
        }
    }

    /// <summary>
    /// Seals <paramref name="frame"/> in place: it holds <c>u32 length | plaintext | 16 spare bytes</c>;
    /// the length is set to plaintext + tag, the plaintext becomes ciphertext and the tag fills the
    /// spare bytes. Callers serialise sends (the counter is per direction).
    /// </summary>
    public void Seal(Span<byte> frame)
    {
        int sealedLength = frame.Length - 4;
        BinaryPrimitives.WriteInt32LittleEndian(frame, sealedLength);
        var body = frame.Slice(4, sealedLength - TagSize);
        Span<byte> nonce = stackalloc byte[12];
        Nonce(nonce, _sendCounter++);
        _send.Encrypt(nonce, body, body, frame[(4 + body.Length)..], frame[..4]);
    }

    /// <summary>
    /// Opens a received frame body (<paramref name="sealedBody"/> = ciphertext || tag, as counted by
    /// <paramref name="lengthPrefix"/>) into <paramref name="plaintext"/>; throws <see cref="ProtocolException"/>
    /// when it was not sealed by the peer as the next frame of this connection.
    /// </summary>
    public void Open(ReadOnlySpan<byte> lengthPrefix, ReadOnlySpan<byte> sealedBody, Span<byte> plaintext)
    {
        if (sealedBody.Length < TagSize) throw new ProtocolException($"sealed control frame of {sealedBody.Length} bytes is shorter than its tag");
        Span<byte> nonce = stackalloc byte[12];
        Nonce(nonce, _receiveCounter);
        int n = sealedBody.Length - TagSize;
        try
        {
            _receive.Decrypt(nonce, sealedBody[..n], sealedBody[n..], plaintext[..n], lengthPrefix);
        }
        catch (AuthenticationTagMismatchException)
        {
            CryptographicOperations.ZeroMemory(plaintext[..n]);
            throw new ProtocolException($"control frame {_receiveCounter} failed authentication (altered, replayed, reordered or from another connection)");
        }
        _receiveCounter++;
    }

    private static void Nonce(Span<byte> nonce, ulong counter)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(nonce, 0);
        BinaryPrimitives.WriteUInt64LittleEndian(nonce[4..], counter);
    }

    /// <summary>Releases both keys.</summary>
    public void Dispose()
    {
        _send.Dispose();
        _receive.Dispose();
    }
}
