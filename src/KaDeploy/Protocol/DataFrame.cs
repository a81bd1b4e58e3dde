using System.Buffers.Binary;
using System.IO.Hashing;

namespace KaDeploy.Protocol;

/// <summary>Kinds of frame on a data link.</summary>
public enum DataFrameType : byte
{
    /// <summary>A chunk of the wire stream at a given offset.</summary>
    Data = 1,
    /// <summary>End of stream: wire length, payload length, digest algorithm and digest of the payload.</summary>
    End = 2,
    /// <summary>The sender gives up; the payload is a UTF-8 reason.</summary>
    Abort = 3,
}

/// <summary>
/// Fixed 32-byte header in front of every data-link frame (little endian):
/// <c>u32 magic 'KDDF' | u8 type | u8 version | u16 reserved | u32 payload length | u64 wire offset | u64 XxHash3(payload)</c>.
/// Frames are forwarded to children byte for byte, so a node never re-encodes what it relays.
/// </summary>
public readonly record struct DataFrameHeader(DataFrameType Type, int PayloadLength, long Offset, ulong Checksum)
{
    /// <summary>Size of the header on the wire.</summary>
    public const int Size = 32;

    private const uint FrameMagic = 0x4644444B; // "KDDF"

    /// <summary>Bytes of the End frame's payload.</summary>
    public const int EndPayloadSize = 8 + 8 + 1 + 32;

    /// <summary>Writes the header into the first <see cref="Size"/> bytes of <paramref name="destination"/>.</summary>
    public void Write(Span<byte> destination)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, FrameMagic);
        destination[4] = (byte)Type;
        destination[5] = (byte)ProtocolConstants.Version;
        BinaryPrimitives.WriteUInt16LittleEndian(destination[6..], 0);
        BinaryPrimitives.WriteInt32LittleEndian(destination[8..], PayloadLength);
        BinaryPrimitives.WriteInt64LittleEndian(destination[12..], Offset);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[20..], Checksum);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[28..], 0);
    }

    /// <summary>Parses and validates a header; throws <see cref="ProtocolException"/> on anything malformed.</summary>
    public static DataFrameHeader Read(ReadOnlySpan<byte> source)
    {
        if (BinaryPrimitives.ReadUInt32LittleEndian(source) != FrameMagic)
            throw new ProtocolException("data frame has a bad magic number (not a ka-deploy data stream)");
        var type = (DataFrameType)source[4];
        if (source[5] != ProtocolConstants.Version)
            throw new ProtocolException($"data frame version {source[5]}, expected {ProtocolConstants.Version}");
        int length = BinaryPrimitives.ReadInt32LittleEndian(source[8..]);
        long offset = BinaryPrimitives.ReadInt64LittleEndian(source[12..]);
        ulong checksum = BinaryPrimitives.ReadUInt64LittleEndian(source[20..]);
        int max = type switch
        {
            DataFrameType.Data => ProtocolConstants.MaxChunkPayload,
            DataFrameType.End => EndPayloadSize,
            DataFrameType.Abort => 4096,
            _ => throw new ProtocolException($"unknown data frame type {(byte)type}"),
        };
        if (length < 0 || length > max)
            throw new ProtocolException($"{type} frame of {length} bytes exceeds the limit of {max}");
        if (offset < 0)
            throw new ProtocolException($"{type} frame at negative offset {offset}");
        if (type == DataFrameType.End && length != EndPayloadSize)
            throw new ProtocolException($"End frame of {length} bytes, expected {EndPayloadSize}");
        return new DataFrameHeader(type, length, offset, checksum);
    }

    /// <summary>Checksum of a frame payload, seeded with its offset so a chunk replayed at the wrong place fails too.</summary>
    public static ulong ComputeChecksum(ReadOnlySpan<byte> payload, long offset) =>
        XxHash3.HashToUInt64(payload, offset);
}

/// <summary>The peer broke the protocol (garbage, wrong version, oversized or truncated frame).</summary>
public sealed class ProtocolException : KaDeployException
{
    public ProtocolException(string message) : base(message) { }
}
