using KaDeploy.Protocol;

namespace KaDeploy.Relay;

/// <summary>
/// A client's upstream loop: reads frames from the parent link straight into ring slots (the only
/// copy on the relay path is the kernel's), checks each one (magic, size, offset continuity,
/// XxHash3) before anyone forwards it, and publishes it.
/// </summary>
public sealed class FrameReceiver
{
    private readonly Stream _upstream;
    private readonly RelayRing _ring;
    private long _expectedOffset;

    public FrameReceiver(Stream upstream, RelayRing ring, long startOffset = 0)
    {
        ArgumentNullException.ThrowIfNull(upstream);
        ArgumentNullException.ThrowIfNull(ring);
        _upstream = upstream;
        _ring = ring;
        _expectedOffset = startOffset;
    }

    /// <summary>Wire bytes received and verified so far.</summary>
    public long WireBytes => Volatile.Read(ref _expectedOffset);

    /// <summary>Runs until the End frame; returns it. Faults the ring on any error, then rethrows.</summary>
    public async Task<EndOfStream> RunAsync(CancellationToken cancellationToken)
    {
        try
        {
            while (true)
            {
                var slot = await _ring.AcquireAsync(cancellationToken).ConfigureAwait(false);
                await ReadExactlyAsync(slot.AsMemory(0, DataFrameHeader.Size), "a frame header", cancellationToken).ConfigureAwait(false);
                var header = DataFrameHeader.Read(slot);
                if (header.Offset != _expectedOffset)
                    throw new ProtocolException($"frame at offset {header.Offset}, expected {_expectedOffset}");
                var payload = slot.AsMemory(DataFrameHeader.Size, header.PayloadLength);
                await ReadExactlyAsync(payload, $"a {header.PayloadLength}-byte frame at offset {header.Offset}", cancellationToken).ConfigureAwait(false);
                if (DataFrameHeader.ComputeChecksum(payload.Span, header.Offset) != header.Checksum)
                    throw new ProtocolException($"checksum mismatch in the frame at offset {header.Offset}");
                switch (header.Type)
                {
                    case DataFrameType.Data:
                        _ring.Publish(header, DataFrameHeader.Size + header.PayloadLength);
                        Volatile.Write(ref _expectedOffset, header.Offset + header.PayloadLength);
                        break;
                    case DataFrameType.End:
                        var end = EndOfStream.Parse(payload.Span);
                        if (end.WireLength != _expectedOffset)
                            throw new ProtocolException($"stream ended at {end.WireLength} but {_expectedOffset} bytes arrived");
                        _ring.Publish(header, DataFrameHeader.Size + header.PayloadLength);
                        return end;
                    case DataFrameType.Abort:
                        throw new KaDeployException("upstream aborted: " + System.Text.Encoding.UTF8.GetString(payload.Span));
                }
            }
        }
        catch (Exception e)
        {
            _ring.Fault(e);
            throw;
        }
    }

    private async Task ReadExactlyAsync(Memory<byte> buffer, string what, CancellationToken cancellationToken)
    {
        int got = await _upstream.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
        if (got < buffer.Length)
            throw new ProtocolException($"upstream closed the link in {what} (after {_expectedOffset} bytes)");
    }
}
