using KaDeploy.Protocol;
using KaDeploy.Security;

namespace KaDeploy.Relay;

/// <summary>
/// A client's upstream loop: reads frames from the parent link straight into ring slots (the only
/// copy on the relay path is the kernel's), checks each one (magic, size, offset continuity,
/// XxHash3) before anyone forwards it, and publishes it. In a keyed session (a <see cref="StreamCipher"/>
/// is given) every frame must be sealed and is opened (AES-GCM tag checked, plaintext written beside
/// the wire bytes) before it is published; a clear frame is refused, so nobody can downgrade the link.
/// </summary>
public sealed class FrameReceiver
{
    private readonly Stream _upstream;
    private readonly RelayRing _ring;
    private readonly bool _faultRing;
    private readonly StreamCipher? _cipher;
    private long _expectedOffset;

    /// <param name="upstream">The parent link, after its handshake.</param>
    /// <param name="ring">The node's ring (with sealed slots when <paramref name="cipher"/> is given).</param>
    /// <param name="startOffset">Wire offset of the first frame expected (a resumed link starts where the last one stopped).</param>
    /// <param name="cipher">The session's stream cipher in a keyed session; null accepts clear frames only.</param>
    /// <param name="faultRingOnError">
    /// Fail the ring's consumers when the link fails. A node that can be re-attached passes false: its
    /// children and sink wait for the frames a new parent will bring.
    /// </param>
    public FrameReceiver(Stream upstream, RelayRing ring, long startOffset = 0, StreamCipher? cipher = null, bool faultRingOnError = true)
    {
        ArgumentNullException.ThrowIfNull(upstream);
        ArgumentNullException.ThrowIfNull(ring);
        if (cipher is not null && !ring.IsSealed) throw new ArgumentException("an opening receiver needs a ring with sealed slots", nameof(ring));
        _upstream = upstream;
        _ring = ring;
        _expectedOffset = startOffset;
        _faultRing = faultRingOnError;
        _cipher = cipher;
    }

    /// <summary>Who sends the frames ("parent node 3 (10.0.0.3:4000)", "the server (...)"): failures name the peer that was lost.</summary>
    public string Peer { get; init; } = "upstream";

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
                await ReadExactlyAsync(slot.AsMemory(0, DataFrameHeader.Size), default, cancellationToken).ConfigureAwait(false);
                var header = DataFrameHeader.Read(slot);
                if (header.Offset != _expectedOffset)
                    throw new ProtocolException($"frame at offset {header.Offset}, expected {_expectedOffset}");
                var wire = slot.AsMemory(DataFrameHeader.Size, header.PayloadLength);
                await ReadExactlyAsync(wire, header, cancellationToken).ConfigureAwait(false);
                Memory<byte> payload;
                if (_cipher is not null)
                {
                    payload = slot.AsMemory(RelayRing.PlaintextOffset, header.PlaintextLength);
                    _cipher.Open(header, slot.AsSpan(0, DataFrameHeader.Size + header.PayloadLength), payload.Span);
                }
                else if (header.IsSealed)
                {
                    throw new ProtocolException($"sealed frame at offset {header.Offset}, but this node has no stream key (keyed server, unkeyed node)");
                }
                else
                {
                    payload = wire;
                    if (DataFrameHeader.ComputeChecksum(payload.Span, header.Offset) != header.Checksum)
                        throw new ProtocolException($"checksum mismatch in the frame at offset {header.Offset}");
                }
                switch (header.Type)
                {
                    case DataFrameType.Data:
                        _ring.Publish(header, DataFrameHeader.Size + header.PayloadLength);
                        Volatile.Write(ref _expectedOffset, header.Offset + header.PlaintextLength);
                        break;
                    case DataFrameType.End:
                        var end = EndOfStream.Parse(payload.Span);
                        if (end.WireLength != _expectedOffset)
                            throw new ProtocolException($"stream ended at {end.WireLength} but {_expectedOffset} bytes arrived");
                        _ring.Publish(header, DataFrameHeader.Size + header.PayloadLength);
                        return end;
                    case DataFrameType.Abort:
                        throw new KaDeployException($"{Peer} aborted: " + System.Text.Encoding.UTF8.GetString(payload.Span));
                }
            }
        }
        catch (IOException e)
        {
            // A reset or dead-peer timeout: the socket's message alone does not say which link broke.
            var named = new KaDeployException($"link to {Peer} lost: {e.Message}", e);
            if (_faultRing) _ring.Fault(named);
            throw named;
        }
        catch (Exception e)
        {
            if (_faultRing) _ring.Fault(e);
            throw;
        }
    }

    // `frame` is default while reading a header; the message is only built when the link breaks.
    private async ValueTask ReadExactlyAsync(Memory<byte> buffer, DataFrameHeader frame, CancellationToken cancellationToken)
    {
        int got = await _upstream.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
        if (got < buffer.Length)
            throw new ProtocolException(frame.PayloadLength == 0 && frame.Offset == 0 && frame.Type == 0
                ? $"{Peer} closed the link in a frame header (after {_expectedOffset} bytes)"
                : $"{Peer} closed the link in a {frame.PayloadLength}-byte frame at offset {frame.Offset}");
    }
}
