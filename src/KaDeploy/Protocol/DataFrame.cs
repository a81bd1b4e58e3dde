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

/// <summary>Bits of a data frame's flags byte.</summary>
[Flags]
public enum DataFrameFlags : byte
{
    /// <summary>A clear frame, checked by XxHash3.</summary>
    None = 0,
    /// <summary>Sealed with AES-256-GCM under the session's stream key: the payload is ciphertext || 16-byte tag (docs/protocol.md section 3).</summary>
    Sealed = 1,
    /// <summary>With <see cref="Sealed"/>: sealed with AEGIS-256 instead, and the tag is 32 bytes (libsodium's AEGIS tags are 256-bit).</summary>
    Aegis256 = 2,
    /// <summary>With <see cref="Sealed"/>: sealed with AEGIS-128L, the tag is 32 bytes.</summary>
    Aegis128L = 4,
}

/// <summary>
/// Fixed 32-byte header in front of every data-link frame (little endian):
/// <c>u32 magic 'KDDF' | u8 type | u8 version | u8 flags | u8 reserved | u32 payload length | u64 wire offset | u64 check | u32 reserved</c>.
/// Frames are forwarded to children byte for byte, so a node never re-encodes what it relays.
/// Clear frames: check = XxHash3(payload, seed = offset). Sealed frames: the payload on the wire is
/// ciphertext || tag, <see cref="PayloadLength"/> counts both, check = 0 (the tag is the check),
/// and the offset advances by <see cref="PlaintextLength"/>.
/// </summary>
public readonly record struct DataFrameHeader(DataFrameType Type, int PayloadLength, long Offset, ulong Checksum,
    DataFrameFlags Flags = DataFrameFlags.None)
{
    /// <summary>Bytes of an AES-256-GCM sealed frame's authentication tag.</summary>
    public const int TagSize = 16;

    /// <summary>Bytes of an AEGIS-256 or AEGIS-128L sealed frame's authentication tag (libsodium's AEGIS tags are 256-bit).</summary>
    public const int AegisTagSize = 32;

    /// <summary>
    /// Largest plaintext chunk of an AES-256-GCM sealed Data frame: the tag fits in the same slot. An AEGIS-256 frame
    /// holds 16 bytes less (its tag is 32 bytes; <c>StreamCipher.MaxChunk</c>); either way a full frame fills its relay
    /// slot exactly, which the batched receive and send rely on.
    /// </summary>
    public const int MaxSealedChunk = ProtocolConstants.MaxChunkPayload - TagSize;

    /// <summary>The frame is sealed (AEAD) rather than checksummed.</summary>
    public bool IsSealed => (Flags & DataFrameFlags.Sealed) != 0;

    /// <summary>Bytes of the frame's tag: 0 clear, 16 AES-256-GCM, 32 AEGIS-256.</summary>
    public int TagLength => TagLengthOf(Flags);

    /// <summary>Bytes of plaintext the frame carries: the wire-stream bytes it advances the offset by.</summary>
    public int PlaintextLength => PayloadLength - TagLength;

    private static int TagLengthOf(DataFrameFlags flags) =>
        (flags & DataFrameFlags.Sealed) == 0 ? 0 : (flags & (DataFrameFlags.Aegis256 | DataFrameFlags.Aegis128L)) != 0 ? AegisTagSize : TagSize;

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
        destination[6] = (byte)Flags;
        destination[7] = 0;
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
        var flags = (DataFrameFlags)source[6];
        // At most one cipher bit, and only on a sealed frame.
        var cipher = flags & (DataFrameFlags.Aegis256 | DataFrameFlags.Aegis128L);
        if ((flags & ~(DataFrameFlags.Sealed | DataFrameFlags.Aegis256 | DataFrameFlags.Aegis128L)) != 0
            || (cipher != 0 && (flags & DataFrameFlags.Sealed) == 0) || cipher == (DataFrameFlags.Aegis256 | DataFrameFlags.Aegis128L))
            throw new ProtocolException($"data frame with unknown flags 0x{(byte)flags:x2}");
        int tag = TagLengthOf(flags);
        int length = BinaryPrimitives.ReadInt32LittleEndian(source[8..]);
        long offset = BinaryPrimitives.ReadInt64LittleEndian(source[12..]);
        ulong checksum = BinaryPrimitives.ReadUInt64LittleEndian(source[20..]);
        int max = type switch
        {
            DataFrameType.Data => ProtocolConstants.MaxChunkPayload,
            DataFrameType.End => EndPayloadSize + tag,
            DataFrameType.Abort => 4096,
            _ => throw new ProtocolException($"unknown data frame type {(byte)type}"),
        };
        if (length < 0 || length > max)
            throw new ProtocolException($"{type} frame of {length} bytes exceeds the limit of {max}");
        if (offset < 0)
            throw new ProtocolException($"{type} frame at negative offset {offset}");
        if (type == DataFrameType.End && length != EndPayloadSize + tag)
            throw new ProtocolException($"End frame of {length} bytes, expected {EndPayloadSize + tag}");
        if (length < tag)
            throw new ProtocolException($"sealed {type} frame of {length} bytes is shorter than its tag");
        if (offset > long.MaxValue - ProtocolConstants.MaxChunkPayload)
            throw new ProtocolException($"{type} frame at offset {offset} beyond any stream");
        return new DataFrameHeader(type, length, offset, checksum, flags);
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
