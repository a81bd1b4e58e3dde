using System.Buffers.Binary;
using KaDeploy.Protocol;

namespace KaDeploy.Relay;

/// <summary>
/// What the End frame promises: the wire length, the payload length and the payload's digest
/// (<c>u64 wire length | u64 payload length | u8 digest algorithm | 32-byte digest</c>, docs/protocol.md section 3).
/// </summary>
public sealed record EndOfStream(long WireLength, long PayloadLength, DigestAlgorithm Algorithm, byte[] Digest)
{
    /// <summary>Parses an End frame payload (already checksum-verified).</summary>
    public static EndOfStream Parse(ReadOnlySpan<byte> payload)
    {
        var algorithm = (DigestAlgorithm)payload[16];
        if (!Enum.IsDefined(algorithm))
            throw new ProtocolException($"End frame names unknown digest algorithm {(byte)algorithm}");
        return new(BinaryPrimitives.ReadInt64LittleEndian(payload), BinaryPrimitives.ReadInt64LittleEndian(payload[8..]),
            algorithm, payload.Slice(17, PayloadDigest.Size).ToArray());
    }

    /// <summary>Writes this End frame's payload (<see cref="DataFrameHeader.EndPayloadSize"/> bytes).</summary>
    public void Write(Span<byte> payload)
    {
        BinaryPrimitives.WriteInt64LittleEndian(payload, WireLength);
        BinaryPrimitives.WriteInt64LittleEndian(payload[8..], PayloadLength);
        payload[16] = (byte)Algorithm;
        Digest.AsSpan(0, PayloadDigest.Size).CopyTo(payload[17..]);
    }
}
