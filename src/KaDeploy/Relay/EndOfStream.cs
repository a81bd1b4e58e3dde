using System.Buffers.Binary;

namespace KaDeploy.Relay;

/// <summary>What the End frame promises: the wire length, the payload length and the payload's SHA-256.</summary>
public sealed record EndOfStream(long WireLength, long PayloadLength, byte[] Sha256)
{
    /// <summary>Parses an End frame payload (already checksum-verified).</summary>
    public static EndOfStream Parse(ReadOnlySpan<byte> payload) =>
        new(BinaryPrimitives.ReadInt64LittleEndian(payload),
            BinaryPrimitives.ReadInt64LittleEndian(payload[8..]),
            payload.Slice(16, 32).ToArray());
}
