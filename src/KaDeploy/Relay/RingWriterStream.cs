using KaDeploy.IO;
using KaDeploy.Protocol;

namespace KaDeploy.Relay;

/// <summary>
/// The server's producer: a write-only stream that cuts what is written into full-size Data frames
/// in the ring (one copy, from the writer's buffer into the slot), then an End frame.
/// </summary>
public sealed class RingWriterStream : SequentialWriteStream
{
    private readonly RelayRing _ring;
    private readonly CancellationToken _cancellation;
    private byte[]? _slot;
    private int _filled; // payload bytes in _slot
    private long _offset; // wire offset of the current frame

    public RingWriterStream(RelayRing ring, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(ring);
        _ring = ring;
        _cancellation = cancellationToken;
    }

    /// <summary>Wire bytes written so far.</summary>
    public long WireBytes => _offset + _filled;

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            _slot ??= _ring.Acquire(_cancellation);
            buffer = Fill(buffer);
        }
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (!buffer.IsEmpty)
        {
            _slot ??= await _ring.AcquireAsync(cancellationToken).ConfigureAwait(false);
            int before = buffer.Length;
            int left = Fill(buffer.Span).Length;
            buffer = buffer[(before - left)..];
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    private ReadOnlySpan<byte> Fill(ReadOnlySpan<byte> data)
    {
        int n = Math.Min(data.Length, ProtocolConstants.MaxChunkPayload - _filled);
        data[..n].CopyTo(_slot.AsSpan(DataFrameHeader.Size + _filled));
        _filled += n;
        if (_filled == ProtocolConstants.MaxChunkPayload) Seal();
        return data[n..];
    }

    private void Seal()
    {
        var payload = _slot.AsSpan(DataFrameHeader.Size, _filled);
        var header = new DataFrameHeader(DataFrameType.Data, _filled, _offset, DataFrameHeader.ComputeChecksum(payload, _offset));
        header.Write(_slot);
        _ring.Publish(header, DataFrameHeader.Size + _filled);
        _offset += _filled;
        _filled = 0;
        _slot = null;
    }

    /// <summary>Publishes the last partial frame and the End frame with the payload digest.</summary>
    public async Task CompleteAsync(long payloadLength, DigestAlgorithm algorithm, byte[] digest, CancellationToken cancellationToken)
    {
        if (_slot is not null && _filled > 0) Seal();
        var slot = _slot ?? await _ring.AcquireAsync(cancellationToken).ConfigureAwait(false);
        _slot = null;
        long wireLength = _offset;
        var payload = slot.AsSpan(DataFrameHeader.Size, DataFrameHeader.EndPayloadSize);
        new EndOfStream(wireLength, payloadLength, algorithm, digest).Write(payload);
        var header = new DataFrameHeader(DataFrameType.End, DataFrameHeader.EndPayloadSize, wireLength,
            DataFrameHeader.ComputeChecksum(payload, wireLength));
        header.Write(slot);
        _ring.Publish(header, DataFrameHeader.Size + DataFrameHeader.EndPayloadSize);
    }

    public override void Flush() { } // frames are sealed when full, so that every frame but the last is full
    public override long Position { get => WireBytes; set => throw new NotSupportedException(); }
}
