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
    private readonly FrameDigest _frames = new(); // 24 bytes hashed per frame: the Frames digest costs nothing to keep

    /// <param name="ring">The server's ring.</param>
    /// <param name="cancellationToken">Cancels synchronous writes waiting for a slot.</param>
    /// <param name="cipher">Seals every frame (keyed session; the ring must be made with sealed slots); null sends clear frames.</param>
    public RingWriterStream(RelayRing ring, CancellationToken cancellationToken, StreamCipher? cipher = null)
    {
        ArgumentNullException.ThrowIfNull(ring);
        if (cipher is not null && !ring.IsSealed) throw new ArgumentException("a sealing writer needs a ring with sealed slots", nameof(ring));
        _ring = ring;
        _cancellation = cancellationToken;
        _cipher = cipher;
        _chunk = cipher is null ? ProtocolConstants.MaxChunkPayload : cipher.MaxChunk; // a full sealed frame fills its slot, whatever the tag
    }

    /// <summary>Sees every frame as it is sealed, before it is published (the server's source spool indexes them).</summary>
    public ISealedFrameObserver? Observer { get; init; }

    /// <summary>Wire bytes written so far.</summary>
    public long WireBytes => _offset + _filled;

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            if (_slot is null) Take(_ring.Acquire(_cancellation));
            buffer = Fill(buffer);
        }
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (!buffer.IsEmpty)
        {
            if (_slot is null) Take(await _ring.AcquireAsync(cancellationToken).ConfigureAwait(false));
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
        if (_slot is null) Take(await _ring.AcquireAsync(cancellationToken).ConfigureAwait(false));
        return _plain[_filled.._chunk];
    }

    /// <inheritdoc />
    public void Advance(int count)
    {
        if (_slot is null || count < 0 || count > _chunk - _filled) throw new ArgumentOutOfRangeException(nameof(count));
        _filled += count;
        if (_filled == _chunk) Seal();
    }

    private void Take(Memory<byte> slot)
    {
        _slot = slot;
        _plain = _cipher is null ? slot[DataFrameHeader.Size..] : _ring.PlaintextOf(slot);
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
        _frames.Append(header, slot.Slice(DataFrameHeader.Size, header.PayloadLength));
        Observer?.Sealed(header, slot[..(DataFrameHeader.Size + header.PayloadLength)], payload);
        _ring.Publish(header, DataFrameHeader.Size + header.PayloadLength);
        _offset += _filled;
        _filled = 0;
        _slot = null;
    }

    /// <summary>
    /// Publishes the last partial frame and the End frame with the payload digest; returns the digest sent. With
    /// <see cref="DigestAlgorithm.Frames"/> the digest is this writer's own, over every frame it sealed, and
    /// <paramref name="digest"/> must be null; any other algorithm needs the payload's digest.
    /// </summary>
    public async Task<byte[]> CompleteAsync(long payloadLength, DigestAlgorithm algorithm, byte[]? digest, CancellationToken cancellationToken)
    {
        if ((algorithm == DigestAlgorithm.Frames) != (digest is null))
            throw new ArgumentException(digest is null ? $"a {algorithm.Name()} digest needs the payload's digest" : "the frames digest is the writer's own", nameof(digest));
        if (_slot is not null && _filled > 0) Seal();
        digest ??= _frames.Finish();
        if (_slot is null) Take(await _ring.AcquireAsync(cancellationToken).ConfigureAwait(false));
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
        Observer?.Sealed(header, slot[..(DataFrameHeader.Size + header.PayloadLength)], payload);
        _ring.Publish(header, DataFrameHeader.Size + header.PayloadLength);
        return digest;
    }

    public override void Flush() { } // frames are sealed when full, so that every frame but the last is full
    public override long Position { get => WireBytes; set => throw new NotSupportedException(); }
}
