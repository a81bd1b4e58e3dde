using System.Buffers.Binary;
using System.IO.Hashing;
using KaDeploy.Protocol;

namespace KaDeploy.Relay;

/// <summary>
/// The <see cref="DigestAlgorithm.Frames"/> end-to-end digest: XXH3-128 over one 24-byte record per Data frame, in
/// stream order (<c>u64 offset | u32 wire length | u32 flags | u64 check</c>, little endian), zero-padded to
/// <see cref="PayloadDigest.Size"/> bytes. The check is the frame's XxHash3-64 (clear frames) or the first 8 bytes of
/// its AEAD tag (sealed frames).
/// </summary>
/// <remarks>
/// Why this proves the copy: the server folds each frame as it seals it; every node checks each frame's payload
/// against its check (or opens it) before publishing it to its ring, and its sink folds each frame it takes from the
/// ring. Equal digests mean the sink consumed exactly the server's frames, in order, none missing, none twice, each of
/// whose payload had been checked against the server's check. What it does not cover is the ring itself between the
/// check and the sink: a slot is never written while a cursor holds it (<see cref="RelayRing"/>), and a receive writes
/// a slot's header before its payload, so the sink reads the header it folds from the slot it writes from.
/// Costs 24 bytes of hashing per 64 KiB frame instead of a second pass over every byte.
/// </remarks>
public sealed class FrameDigest
{
    /// <summary>Bytes of one frame's record.</summary>
    public const int RecordSize = 24;

    private readonly XxHash128 _hash = new();

    /// <summary>Data frames folded so far.</summary>
    public long Frames { get; private set; }

    /// <summary>Wire offset the next frame must start at: a frame out of place is refused, not folded.</summary>
    public long NextOffset { get; private set; }

    /// <summary>Folds one Data frame. <paramref name="payload"/> is its wire payload (a sealed frame's ends with its tag).</summary>
    public void Append(DataFrameHeader header, ReadOnlySpan<byte> payload)
    {
        if (header.Type != DataFrameType.Data) throw new ArgumentException($"a {header.Type} frame is not folded", nameof(header));
        if (header.Offset != NextOffset)
            throw new KaDeployException($"frame at offset {header.Offset} reached the sink, expected {NextOffset}");
        Span<byte> record = stackalloc byte[RecordSize];
        Record(header, payload, record);
        _hash.Append(record);
        NextOffset = header.Offset + header.PlaintextLength;
        Frames++;
    }

    /// <summary>
    /// Folds a Data frame a sink takes from the ring, with the header read back from the frame's slot (not the ring's
    /// note of it): a slot that was reused for another frame is refused here.
    /// </summary>
    public void Append(RingFrame frame)
    {
        var bytes = frame.Bytes.Span;
        var onSlot = DataFrameHeader.Read(bytes);
        if (onSlot != frame.Header)
            throw new KaDeployException($"the ring slot of the frame at offset {frame.Header.Offset} holds another frame (offset {onSlot.Offset})");
        Append(onSlot, bytes[DataFrameHeader.Size..]);
    }

    /// <summary>The digest of every frame folded (call once, at the End frame).</summary>
    public byte[] Finish()
    {
        var digest = new byte[PayloadDigest.Size];
        _hash.GetCurrentHash(digest);
        return digest;
    }

    /// <summary>Writes a frame's record (<see cref="RecordSize"/> bytes).</summary>
    public static void Record(DataFrameHeader header, ReadOnlySpan<byte> payload, Span<byte> record)
    {
        BinaryPrimitives.WriteInt64LittleEndian(record, header.Offset);
        BinaryPrimitives.WriteInt32LittleEndian(record[8..], header.PayloadLength);
        BinaryPrimitives.WriteUInt32LittleEndian(record[12..], (uint)header.Flags);
        ulong check = header.IsSealed
            ? BinaryPrimitives.ReadUInt64LittleEndian(payload.Slice(header.PayloadLength - header.TagLength, 8))
            : header.Checksum;
        BinaryPrimitives.WriteUInt64LittleEndian(record[16..], check);
    }
}
