using KaDeploy.IO;
using KaDeploy.Protocol;
using KaDeploy.Security;

namespace KaDeploy.Relay;

/// <summary>
/// The server's producer: a write-only stream that cuts what is written into full-size Data frames
/// in the ring (one copy, from the writer's buffer into the slot), then an End frame.
/// With a <see cref="StreamCipher"/> (keyed session) each frame is sealed here, once for the whole
/// tree: the chunk is gathered in the slot's plaintext area (<see cref="RelayRing.PlaintextOf"/>) and encrypted
/// into its wire slot.
/// Made with a digest algorithm, it also takes the end-to-end digest of the payload, frame by frame as each is sealed,
/// next to the frame's check: both passes run over the frame while it is in cache, right after the source wrote it
/// (issue 14). That is the digest of exactly what the source produced, as every byte written lands in one frame, in order.
/// </summary>
public sealed class RingWriterStream : SequentialWriteStream, ISegmentWriter
{
    private readonly RelayRing _ring;
    private readonly CancellationToken _cancellation;
    private readonly StreamCipher? _cipher;
    private readonly int _chunk; // plaintext bytes per full frame
    private Memory<byte>? _slot;
    private Memory<byte> _plain; // where the current chunk is gathered: the slot's payload, or a sealed ring's plaintext area
    private int _filled; // payload bytes in _slot
    private long _offset; // wire offset of the current frame
    private Memory<byte> _run; // slots reserved after the current one (a lent run), taken in order before any new acquire
    private int _lentBytes; // bytes lent by the last GetSegment(s)Async, from _filled on
    private readonly PayloadDigest? _digest;

    /// <param name="ring">The server's ring.</param>
    /// <param name="cancellationToken">Cancels synchronous writes waiting for a slot.</param>
    /// <param name="cipher">Seals every frame (keyed session; the ring must be made with sealed slots); null sends clear frames.</param>
    /// <param name="digest">Takes the payload's end-to-end digest frame by frame (<see cref="Digest"/>); null: none.</param>
    public RingWriterStream(RelayRing ring, CancellationToken cancellationToken, StreamCipher? cipher = null, DigestAlgorithm? digest = null)
    {
        ArgumentNullException.ThrowIfNull(ring);
        if (cipher is not null && !ring.IsSealed) throw new ArgumentException("a sealing writer needs a ring with sealed slots", nameof(ring));
        _ring = ring;
        _cancellation = cancellationToken;
        _cipher = cipher;
        _chunk = cipher is null ? ProtocolConstants.MaxChunkPayload : cipher.MaxChunk; // a full sealed frame fills its slot, whatever the tag
        _digest = digest is { } algorithm ? new PayloadDigest(algorithm) : null;
    }

    /// <summary>
    /// The digest of every payload byte written (made with a digest algorithm only). Seals the last partial frame
    /// first; call once, after the last write, before <see cref="CompleteAsync"/>.
    /// </summary>
    public byte[] Digest()
    {
        if (_digest is null) throw new InvalidOperationException("this writer takes no digest");
        if (_slot is not null && _filled > 0) Seal();
        return _digest.Finish();
    }

    /// <summary>Wire bytes written so far.</summary>
    public long WireBytes => _offset + _filled;

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            if (_slot is null) TakeNext(_ring.Acquire);
            buffer = Fill(buffer);
        }
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (!buffer.IsEmpty)
        {
            if (_slot is null) await TakeNextAsync(1, cancellationToken).ConfigureAwait(false);
            int before = buffer.Length;
            int left = Fill(buffer.Span).Length;
            buffer = buffer[(before - left)..];
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    /// <inheritdoc />
    public bool LendsSegments => true;

    /// <summary>The rest of the current frame's payload (a new slot's when none is open): a source reads into the slot itself.</summary>
    public async ValueTask<Memory<byte>> GetSegmentAsync(CancellationToken cancellationToken)
    {
        if (_slot is null) await TakeNextAsync(1, cancellationToken).ConfigureAwait(false);
        _lentBytes = _chunk - _filled;
        return _plain[_filled.._chunk];
    }

    /// <summary>
    /// The rest of the current frame's payload, or, at a frame boundary, the payloads of a run of slots that follow each
    /// other in the ring (<see cref="RelayRing.AcquireRunAsync"/>): as many as fit in <paramref name="maxBytes"/> (at
    /// least one piece) and in <paramref name="into"/>, and as the ring has free now (it waits for one slot at most).
    /// A run is reserved only when no slot is held: the ring reserves from its last published frame on.
    /// </summary>
    public async ValueTask<int> GetSegmentsAsync(Memory<byte>[] into, int maxBytes, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(into);
        ArgumentOutOfRangeException.ThrowIfZero(into.Length);
        int wanted = _slot is not null ? 1 : Math.Clamp(maxBytes / _chunk, 1, into.Length);
        if (_slot is null) await TakeNextAsync(wanted, cancellationToken).ConfigureAwait(false);
        into[0] = _plain[_filled.._chunk];
        int lent = into[0].Length, pieces = 1;
        for (int i = 0; pieces < wanted && i * RelayRing.SlotSize < _run.Length; i++, pieces++)
        {
            into[pieces] = PlainOf(_run.Slice(i * RelayRing.SlotSize, RelayRing.SlotSize))[.._chunk];
            lent += _chunk;
        }
        _lentBytes = lent;
        return pieces;
    }

    /// <inheritdoc />
    public void Advance(int count)
    {
        if (_slot is null || count < 0 || count > _lentBytes) throw new ArgumentOutOfRangeException(nameof(count));
        _lentBytes = 0;
        while (true)
        {
            int n = Math.Min(count, _chunk - _filled);
            _filled += n;
            count -= n;
            if (_filled < _chunk) break;
            Seal();
            if (count == 0) break;
            TakeFromRun(); // the lent pieces after the first are the run's slots, in order
        }
    }

    private Memory<byte> PlainOf(Memory<byte> slot) => _cipher is null ? slot[DataFrameHeader.Size..] : _ring.PlaintextOf(slot);

    private void Take(Memory<byte> slot)
    {
        _slot = slot;
        _plain = PlainOf(slot);
    }

    private void TakeFromRun()
    {
        Take(_run[..RelayRing.SlotSize]);
        _run = _run[RelayRing.SlotSize..];
    }

    // The next slot: the next of a reserved run, or a newly acquired one (with up to `slots` - 1 more behind it).
    private async ValueTask TakeNextAsync(int slots, CancellationToken cancellationToken)
    {
        if (_run.IsEmpty) _run = await _ring.AcquireRunAsync(slots, cancellationToken).ConfigureAwait(false);
        TakeFromRun();
    }

    private void TakeNext(Func<CancellationToken, Memory<byte>> acquire)
    {
        if (_run.IsEmpty) _run = acquire(_cancellation);
        TakeFromRun();
    }

    private ReadOnlySpan<byte> Fill(ReadOnlySpan<byte> data)
    {
        int n = Math.Min(data.Length, _chunk - _filled);
        data[..n].CopyTo(_plain.Span[_filled..]);
        _filled += n;
        if (_filled == _chunk) Seal();
        return data[n..];
    }

    private void Seal()
    {
        var slot = _slot!.Value.Span;
        var payload = _plain.Span[.._filled];
        _digest?.Append(payload); // hot: the source has just written these bytes; the check below reads them next
        DataFrameHeader header;
        if (_cipher is null)
        {
            header = new DataFrameHeader(DataFrameType.Data, _filled, _offset, DataFrameHeader.ComputeChecksum(payload, _offset));
            header.Write(slot);
        }
        else
        {
            header = _cipher.Seal(DataFrameType.Data, _offset, payload, slot);
        }
        _ring.Publish(header, DataFrameHeader.Size + header.PayloadLength);
        _offset += _filled;
        _filled = 0;
        _slot = null;
    }

    /// <summary>Publishes the last partial frame and the End frame with the payload digest.</summary>
    public async Task CompleteAsync(long payloadLength, DigestAlgorithm algorithm, byte[] digest, CancellationToken cancellationToken)
    {
        if (_slot is not null && _filled > 0) Seal();
        if (_slot is null) await TakeNextAsync(1, cancellationToken).ConfigureAwait(false);
        var slot = _slot!.Value.Span;
        _slot = null;
        long wireLength = _offset;
        var payload = _plain.Span[..DataFrameHeader.EndPayloadSize];
        new EndOfStream(wireLength, payloadLength, algorithm, digest).Write(payload);
        DataFrameHeader header;
        if (_cipher is null)
        {
            header = new DataFrameHeader(DataFrameType.End, DataFrameHeader.EndPayloadSize, wireLength,
                DataFrameHeader.ComputeChecksum(payload, wireLength));
            header.Write(slot);
        }
        else
        {
            // Sealed too: the stream's length and digest are authenticated, so a cut stream cannot pass for a whole one.
            header = _cipher.Seal(DataFrameType.End, wireLength, payload, slot);
        }
        _ring.Publish(header, DataFrameHeader.Size + header.PayloadLength);
    }

    public override void Flush() { } // frames are sealed when full, so that every frame but the last is full
    public override long Position { get => WireBytes; set => throw new NotSupportedException(); }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _digest?.Dispose();
        base.Dispose(disposing);
    }
}
