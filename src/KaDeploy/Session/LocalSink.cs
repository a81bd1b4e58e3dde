using KaDeploy.Payloads;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using ZstdSharp;

namespace KaDeploy.Session;

/// <summary>Ring → (zstd) → digest → sink, then the verdict against the End frame.</summary>
internal sealed class LocalSink(RingCursor cursor, IPayloadSink sink, WireCompression compression, DigestAlgorithm algorithm)
{
    private DigestReadStream? _digest;

    public long PayloadBytes => _digest?.BytesRead ?? 0;

    public async Task<(bool Verified, string Message)> RunAsync(CancellationToken ct)
    {
        // The frames digest is folded by the reader, frame by frame as the sink takes them; a content digest is taken
        // over the bytes the sink consumes (after decompression).
        var frames = algorithm.IsContentDigest() ? null : new FrameDigest();
        var reader = new RingReaderStream(cursor) { Frames = frames };
        Stream? decompressor = null;
        bool abandoned = false;
        try
        {
            decompressor = compression == WireCompression.Zstd ? new DecompressionStream(reader, 1 << 20, leaveOpen: true) : null;
            _digest = new DigestReadStream(decompressor ?? reader, algorithm);
            var consuming = Task.Run(() => sink.ConsumeAsync(_digest, ct), ct);
            if (await Task.WhenAny(consuming, cursor.Evicted).ConfigureAwait(false) != consuming)
            {
                // The disk (or command) stopped taking data. Leave the stuck call behind, keep relaying.
                abandoned = true;
                return (false, "local sink stalled: " + await cursor.Evicted.ConfigureAwait(false));
            }
            await consuming.ConfigureAwait(false);
            await _digest.DrainAsync(ct).ConfigureAwait(false);
            // Whatever follows the payload on the wire must be nothing. ZstdSharp's decoder reads its input to the End frame
            // (garbage after the frame fails it, a further frame changes the length and the digest), so with it this
            // guard is never reached; it stays for a decoder that stops at the end of its frame.
            var rest = new byte[4096];
            if (await reader.ReadAsync(rest, ct).ConfigureAwait(false) > 0)
                return (false, "unexpected data after the end of the compressed payload");
            var end = reader.End ?? throw new KaDeployException("stream ended without an End frame");
            if (end.Algorithm != algorithm)
                return (false, $"the End frame carries a {end.Algorithm.Name()} digest, the plan named {algorithm.Name()}");
            if (_digest.BytesRead != end.PayloadLength)
                return (false, $"payload length {_digest.BytesRead} differs from the server's {end.PayloadLength}");
            if (frames is not null && frames.NextOffset != end.WireLength)
                return (false, $"the sink took frames up to wire offset {frames.NextOffset}, the stream is {end.WireLength} bytes");
            byte[] sum = frames?.Finish() ?? _digest.Digest();
            if (!sum.AsSpan().SequenceEqual(end.Digest))
                return (false, $"{algorithm.Name()} mismatch: got {DeployServer.Hex(algorithm, sum)}, server sent {DeployServer.Hex(algorithm, end.Digest)}");
            return (true, "");
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            return (false, OneLine(e));
        }
        finally
        {
            // Detach from the ring so that a failed sink never holds back the children. An abandoned sink
            // may still be inside these streams: the ring has already let go of it, leave them alone.
            if (!abandoned)
            {
                decompressor?.Dispose();
                _digest?.Dispose();
                reader.Dispose();
            }
        }
    }

    private static string OneLine(Exception e)
    {
        string m = e is KaDeployException ? e.Message : $"{e.GetType().Name}: {e.Message}";
        return m.ReplaceLineEndings(" ");
    }
}
