using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace KaDeploy.Security;

/// <summary>
/// Authenticates the UDP discovery exchange of a keyed session (docs/protocol.md section 2): the
/// client's request ends with a fresh 16-byte nonce, and the server's answer ends with
/// HMAC-SHA256(K, "kd2 discovery" || nonce || u16 len + session || u16 control port), cut to
/// 16 bytes. A client keeps only answers whose tag checks, so a rogue server without the key
/// (answering every broadcast with its own port) is ignored, and an answer recorded earlier does
/// not match a new request's nonce.
/// </summary>
public static class DiscoveryAuthenticator
{
    /// <summary>Bytes of the request nonce.</summary>
    public const int NonceSize = 16;

    /// <summary>Bytes of the answer's tag.</summary>
    public const int TagSize = 16;

    /// <summary>A fresh nonce for one discovery request.</summary>
    public static byte[] NewNonce() => RandomNumberGenerator.GetBytes(NonceSize);

    /// <summary>Writes the answer's tag into <paramref name="tag"/> (<see cref="TagSize"/> bytes).</summary>
    public static void ComputeTag(PresharedKey key, ReadOnlySpan<byte> nonce, string session, int controlPort, Span<byte> tag)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (nonce.Length != NonceSize) throw new ArgumentException($"a discovery nonce is {NonceSize} bytes", nameof(nonce));
        var name = Encoding.UTF8.GetBytes(session);
        var input = new byte["kd2 discovery"u8.Length + NonceSize + 2 + name.Length + 2];
        var w = input.AsSpan();
        "kd2 discovery"u8.CopyTo(w);
        w = w["kd2 discovery"u8.Length..];
        nonce.CopyTo(w);
        BinaryPrimitives.WriteUInt16LittleEndian(w[NonceSize..], (ushort)name.Length);
        name.CopyTo(w[(NonceSize + 2)..]);
        BinaryPrimitives.WriteUInt16LittleEndian(w[(NonceSize + 2 + name.Length)..], (ushort)controlPort);
        HMACSHA256.HashData(key.Bytes, input)[..TagSize].CopyTo(tag);
    }

    /// <summary>True when <paramref name="tag"/> is the key holder's answer to this nonce, session and port (constant time).</summary>
    public static bool Verify(PresharedKey key, ReadOnlySpan<byte> nonce, string session, int controlPort, ReadOnlySpan<byte> tag)
    {
        if (tag.Length != TagSize || nonce.Length != NonceSize) return false;
        Span<byte> expected = stackalloc byte[TagSize];
        ComputeTag(key, nonce, session, controlPort, expected);
        return CryptographicOperations.FixedTimeEquals(expected, tag);
    }
}
