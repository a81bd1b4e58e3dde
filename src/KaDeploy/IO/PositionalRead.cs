using Microsoft.Win32.SafeHandles;

namespace KaDeploy.IO;

/// <summary>Reads at an offset without moving a file position (pread), as many times as a short read needs.</summary>
internal static class PositionalRead
{
    /// <summary>Fills <paramref name="buffer"/> from <paramref name="offset"/>, or up to the end of the file; returns the bytes read.</summary>
    public static int Full(SafeFileHandle file, Span<byte> buffer, long offset)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = RandomAccess.Read(file, buffer[total..], offset + total);
            if (n == 0) break;
            total += n;
        }
        return total;
    }
}
