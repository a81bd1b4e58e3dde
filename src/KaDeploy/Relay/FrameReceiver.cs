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
    private long _expectedOffset; // where the next frame must start (frames checked but not yet published count)
    private long _publishedOffset;

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
        _expectedOffset = _publishedOffset = startOffset;
        _faultRing = faultRingOnError;
        _cipher = cipher;
    }

    /// <summary>Who sends the frames ("parent node 3 (10.0.0.3:4000)", "the server (...)"): failures name the peer that was lost.</summary>
    public string Peer { get; init; } = "upstream";

    /// <summary>Wire bytes received and verified so far.</summary>
    public long WireBytes => Volatile.Read(ref _publishedOffset);

    /// <summary>Runs until the End frame; returns it. Faults the ring on any error, then rethrows.</summary>
    public async Task<EndOfStream> RunAsync(CancellationToken cancellationToken)
    {
        // Receives straight into a run of free slots, as many bytes as the link has (up to a whole run, about
        // 1 MiB), and parses the frames in place: a full-size frame fills its slot exactly, so the next frame's
        // header lands at the start of the next slot. Bytes that follow a shorter frame (the last Data frame, or
        // any frame of a peer that cuts smaller ones) belong at the start of the next slot: they wait in the
        // carry and are copied there. Every frame is checked before it is published, and the frames a receive
        // completed are published together.
        const int stride = RelayRing.SlotSize, maxRun = RelayRing.SegmentSlots; // a sealed ring's wire slots are back to back too
        var carry = new Carry(maxRun * stride);
        var complete = new DataFrameHeader[maxRun];
        int done = 0; // frames of `complete` not yet published
        try
        {
            Memory<byte> run = default;
            int slots = 0, next = 0, filled = 0; // slots in the run; the frame being assembled; bytes placed from the run's start
            while (true)
            {
                if (next == slots)
                {
                    run = await _ring.AcquireRunAsync(maxRun, cancellationToken).ConfigureAwait(false);
                    slots = run.Length / stride;
                    next = 0;
                    filled = 0;
                }
                int start = next * stride;
                int wireEnd = slots * stride;
                int got = carry.Length > 0
                    ? carry.TakeInto(run.Span[filled..wireEnd])
                    : await _upstream.ReadAsync(run[filled..wireEnd], cancellationToken).ConfigureAwait(false);
                if (got == 0)
                {
                    Publish(complete, ref done);
                    throw Truncated(run.Span[start..filled]);
                }
                filled += got;
                // Every frame this receive completed, checked in order.
                while (next < slots && filled - start >= DataFrameHeader.Size)
                {
                    var span = run.Span;
                    var header = DataFrameHeader.Read(span[start..]);
                    if (header.Offset != _expectedOffset)
                        throw new ProtocolException($"frame at offset {header.Offset}, expected {_expectedOffset}");
                    int frameEnd = start + DataFrameHeader.Size + header.PayloadLength;
                    if (filled < frameEnd) break;
                    var payload = Check(header, run, start);
                    switch (header.Type)
                    {
                        case DataFrameType.Data:
                            complete[done++] = header;
                            _expectedOffset = header.Offset + header.PlaintextLength; // the next frame is checked against it
                            break;
                        case DataFrameType.End:
                            var end = EndOfStream.Parse(payload);
                            if (end.WireLength != _expectedOffset)
                                throw new ProtocolException($"stream ended at {end.WireLength} but {_expectedOffset} bytes arrived");
                            complete[done++] = header;
                            Publish(complete, ref done);
                            return end;
                        case DataFrameType.Abort:
                            throw new KaDeployException($"{Peer} aborted: " + System.Text.Encoding.UTF8.GetString(payload));
                    }
                    next++;
                    int nextStart = next * stride;
                    if (frameEnd < nextStart)
                    {
                        // A short frame: whatever came after it is out of place.
                        if (filled > frameEnd) carry.Prepend(span[frameEnd..filled]);
                        filled = nextStart;
                    }
                    start = nextStart;
                }
                Publish(complete, ref done);
            }
        }
        catch (IOException e)
        {
            Publish(complete, ref done);
            // A reset or dead-peer timeout: the socket's message alone does not say which link broke.
            var named = new KaDeployException($"link to {Peer} lost: {e.Message}", e);
            if (_faultRing) _ring.Fault(named);
            throw named;
        }
        catch (Exception e)
        {
            Publish(complete, ref done); // the frames checked before the bad one are good
            if (_faultRing) _ring.Fault(e);
            throw;
        }
    }

    private void Publish(DataFrameHeader[] complete, ref int done)
    {
        if (done == 0) return;
        _ring.Publish(complete.AsSpan(0, done));
        done = 0;
        Volatile.Write(ref _publishedOffset, _expectedOffset);
    }

    // Checks a whole frame (XxHash3, or opens a sealed one into its slot's plaintext area); returns its payload in clear.
    private ReadOnlySpan<byte> Check(DataFrameHeader header, Memory<byte> run, int start)
    {
        if (_cipher is not null)
        {
            // The tag is the check: no XxHash3 of the frame (the session's end-to-end digest still covers every byte).
            var plaintext = _ring.PlaintextOf(run.Slice(start, RelayRing.SlotSize)).Span[..header.PlaintextLength];
            _cipher.Open(header, run.Span.Slice(start, DataFrameHeader.Size + header.PayloadLength), plaintext);
            return plaintext;
        }
        var wire = run.Span.Slice(start + DataFrameHeader.Size, header.PayloadLength);
        if (header.IsSealed)
            throw new ProtocolException($"sealed frame at offset {header.Offset}, but this node has no stream key (keyed server, unkeyed node)");
        if (DataFrameHeader.ComputeChecksum(wire, header.Offset) != header.Checksum)
            throw new ProtocolException($"checksum mismatch in the frame at offset {header.Offset}");
        return wire;
    }

    // The link closed inside a frame; `partial` is what arrived of it.
    private ProtocolException Truncated(ReadOnlySpan<byte> partial)
    {
        if (partial.Length < DataFrameHeader.Size)
            return new ProtocolException($"{Peer} closed the link in a frame header (after {_expectedOffset} bytes)");
        var frame = DataFrameHeader.Read(partial);
        return new ProtocolException($"{Peer} closed the link in a {frame.PayloadLength}-byte frame at offset {frame.Offset}");
    }

    /// <summary>
    /// Bytes received past a short frame, waiting for their slot. Kept right-aligned in one buffer, so that bytes
    /// put back in front (those that followed a short frame inside a run filled from here) always fit: the carry
    /// never holds more than one receive brought.
    /// </summary>
    private sealed class Carry(int capacity)
    {
        private byte[]? _buffer;
        public int Length { get; private set; }

        public void Prepend(ReadOnlySpan<byte> bytes)
        {
            _buffer ??= new byte[capacity];
            if (Length + bytes.Length > _buffer.Length) throw new InvalidOperationException("receive carry overflow");
            bytes.CopyTo(_buffer.AsSpan(_buffer.Length - Length - bytes.Length));
            Length += bytes.Length;
        }

        public int TakeInto(Span<byte> destination)
        {
            int n = Math.Min(Length, destination.Length);
            _buffer.AsSpan(_buffer!.Length - Length, n).CopyTo(destination);
            Length -= n;
            return n;
        }
    }
}
