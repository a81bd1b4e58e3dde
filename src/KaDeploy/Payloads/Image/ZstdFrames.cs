using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace KaDeploy.Payloads.Image;

/// <summary>
/// What a zstd file says about itself in its frame and block headers (RFC 8878, section 3.1), read without
/// decompressing: the sum of its frames' Frame_Content_Size fields. A file compressed from a file (`zstd FILE`)
/// declares it; one compressed from a pipe (`tar c | zstd`) does not, and then there is no answer.
/// </summary>
internal static class ZstdFrames
{
    private const uint FrameMagic = 0xFD2FB528;
    private const uint SkippableMagicMask = 0xFFFFFFF0;
    private const uint SkippableMagic = 0x184D2A50;
    private const int MaxFrameHeader = 4 + 1 + 1 + 4 + 8; // magic, descriptor, window, dictionary id, content size

    /// <summary>
    /// The decompressed size every frame of <paramref name="path"/> declares, summed (skippable frames hold none);
    /// null if any frame does not declare its size, or the file is not a whole sequence of zstd and skippable
    /// frames (a reserved bit or block type, a frame cut short, bytes after the last frame). A claim, not a proof:
    /// the decoder checks each frame's size against what it produced, and every node compares the whole.
    /// </summary>
    public static long? DeclaredContentSize(string path)
    {
        using SafeFileHandle file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return DeclaredContentSize(file);
    }

    /// <inheritdoc cref="DeclaredContentSize(string)"/>
    public static long? DeclaredContentSize(SafeFileHandle file)
    {
        ArgumentNullException.ThrowIfNull(file);
        long length = RandomAccess.GetLength(file);
        if (length == 0) return null;
        Span<byte> header = stackalloc byte[MaxFrameHeader];
        long offset = 0, total = 0;
        while (offset < length)
        {
            int n = IO.PositionalRead.Full(file, header, offset);
            if (n < 8) return null; // the shortest frame header, or a skippable frame's magic and size
            uint magic = BinaryPrimitives.ReadUInt32LittleEndian(header);
            if ((magic & SkippableMagicMask) == SkippableMagic)
            {
                offset += 8 + BinaryPrimitives.ReadUInt32LittleEndian(header[4..]);
                continue;
            }
            if (magic != FrameMagic) return null;
            byte descriptor = header[4];
            if ((descriptor & 0x08) != 0) return null; // reserved bit
            bool singleSegment = (descriptor & 0x20) != 0;
            int position = 5 + (singleSegment ? 0 : 1) + (descriptor & 3) switch { 0 => 0, 1 => 1, 2 => 2, _ => 4 };
            int sizeBytes = (descriptor >> 6) switch { 0 => singleSegment ? 1 : 0, 1 => 2, 2 => 4, _ => 8 };
            if (sizeBytes == 0 || n < position + sizeBytes) return null;
            ReadOnlySpan<byte> field = header.Slice(position, sizeBytes);
            ulong size = sizeBytes switch
            {
                1 => field[0],
                2 => BinaryPrimitives.ReadUInt16LittleEndian(field) + 256UL, // the two-byte field is offset by 256
                4 => BinaryPrimitives.ReadUInt32LittleEndian(field),
                _ => BinaryPrimitives.ReadUInt64LittleEndian(field),
            };
            if (size > (ulong)(long.MaxValue - total)) return null;
            total += (long)size;
            offset += position + sizeBytes;
            if (SkipBlocks(file, ref offset, length) is not true) return null;
            if ((descriptor & 0x04) != 0) offset += 4; // content checksum
        }
        return offset == length ? total : null;
    }

    // Steps over the blocks of one frame, from their 3-byte headers: true after its last block.
    private static bool? SkipBlocks(SafeFileHandle file, ref long offset, long length)
    {
        Span<byte> block = stackalloc byte[3];
        while (offset < length)
        {
            if (IO.PositionalRead.Full(file, block, offset) < 3) return null;
            int value = block[0] | block[1] << 8 | block[2] << 16;
            int type = (value >> 1) & 3;
            if (type == 3) return null; // reserved
            offset += 3 + (type == 1 ? 1 : value >> 3); // an RLE block holds one byte, repeated Block_Size times
            if ((value & 1) != 0) return true;
        }
        return null;
    }
}
