using System.Buffers;

namespace KaDeploy.Payloads.Block;

/// <summary>The end of a double-buffered copy (one piece read while the previous one is written).</summary>
internal static class OverlappedIo
{
    /// <summary>
    /// Returns both buffers to the pool, after the I/O still in flight (if any) has finished: it owns one of
    /// them. Its failure was already reported to whoever awaited the copy, or the copy failed first.
    /// </summary>
    public static async ValueTask ReturnAfterAsync(Task? pending, byte[] first, byte[] second)
    {
        if (pending is not null)
        {
            try { await pending.ConfigureAwait(false); }
            catch (Exception e) when (e is KaDeployException or OperationCanceledException or IOException) { }
        }
        ArrayPool<byte>.Shared.Return(first);
        ArrayPool<byte>.Shared.Return(second);
    }
}
