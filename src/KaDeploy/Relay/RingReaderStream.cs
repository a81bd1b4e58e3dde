using KaDeploy.IO;
using KaDeploy.Protocol;

namespace KaDeploy.Relay;

/// <summary>
/// The local sink's view of the ring: a read-only stream of the Data payloads in order, ending at the
/// End frame (whose contents are then in <see cref="End"/>). <see cref="ReadSegmentAsync"/> lends a frame's
/// payload straight from its ring slot, which stays held until the next read.
/// </summary>
public sealed class RingReaderStream : SequentialReadStream, ISegmentReader
{
    private readonly RingCursor _cursor;
    private RingFrame _frame;
    private int _consumed;
    private bool _holding;
    private bool _lent; // the held frame was lent whole: release it at the next read
    // Held loans (ReadHeldSegments): the payload length of each frame taken and not yet released, in ring order
    // (an empty frame or the End frame holds 0 bytes), and the bytes released that do not yet cover the first one.
    private readonly Queue<int> _held = new();
    private long _releasedPart;

    public RingReaderStream(RingCursor cursor)
    {
        ArgumentNullException.ThrowIfNull(cursor);
        _cursor = cursor;
    }

    /// <summary>The End frame, once reached.</summary>
    public EndOfStream? End { get; private set; }

    /// <summary>Folds every Data frame taken, in order (the <see cref="DigestAlgorithm.Frames"/> digest); null when the session uses a content digest.</summary>
    public FrameDigest? Frames { get; init; }

    /// <summary>Wire bytes read so far.</summary>
    public long WireBytes { get; private set; }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ReturnLent();
        while (true)
        {
            if (buffer.IsEmpty || End is not null) return 0;
            if (!_holding && !Begin(await _cursor.NextAsync(cancellationToken).ConfigureAwait(false))) return 0;
            int n = CopyOut(buffer.Span);
            if (n > 0) return n;
        }
    }

    /// <summary>Blocking read for synchronous consumers (decompressors, tar readers); waits without holding a pool thread hostage to an async continuation.</summary>
    public override int Read(Span<byte> buffer)
    {
        ReturnLent();
        while (true)
        {
            if (buffer.IsEmpty || End is not null) return 0;
            if (!_holding && !Begin(_cursor.Next(CancellationToken.None))) return 0;
            int n = CopyOut(buffer);
            if (n > 0) return n;
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    /// <inheritdoc />
    public async ValueTask<ReadOnlyMemory<byte>> ReadSegmentAsync(CancellationToken cancellationToken)
    {
        ReturnLent();
        while (true)
        {
            if (End is not null) return ReadOnlyMemory<byte>.Empty;
            if (!_holding && !Begin(await _cursor.NextAsync(cancellationToken).ConfigureAwait(false))) return ReadOnlyMemory<byte>.Empty;
            int n = _frame.Header.PlaintextLength - _consumed; // a sealed frame's tag is not payload
            if (n == 0)
            {
                Release(); // an empty Data frame: nothing to lend
                continue;
            }
            var segment = _frame.Payload.Slice(_consumed, n);
            _consumed += n;
            WireBytes += n;
            _lent = true;
            return segment;
        }
    }

    /// <inheritdoc />
    public bool CanHoldSegments => true;

    // Frames that may still be held: half the ring's window, so that a producer waiting on this consumer has left it frames to take.
    private int HoldRoom => Math.Max(1, _cursor.WindowSlots / 2) - _held.Count;

    /// <inheritdoc />
    public int ReadHeldSegments(Span<ReadOnlyMemory<byte>> segments, CancellationToken cancellationToken)
    {
        if (_holding || _lent) throw new InvalidOperationException("held and copied reads do not mix");
        if (segments.IsEmpty) throw new ArgumentException("room for at least one segment", nameof(segments));
        int n = 0;
        while (End is null && n < segments.Length)
        {
            RingFrame frame;
            if (HoldRoom <= 0)
            {
                // Only the End frame may still be taken: it lends no bytes, and the producer has nothing left to wait for.
                if (!_cursor.TryNextAhead(_held.Count, out frame) || frame.Header.Type != DataFrameType.End) break;
            }
            else if (n == 0) frame = _cursor.NextAhead(_held.Count, cancellationToken); // blocks for the first
            else if (!_cursor.TryNextAhead(_held.Count, out frame)) break;
            int length = frame.Header.Type == DataFrameType.Data ? frame.Header.PlaintextLength : 0;
            _held.Enqueue(length);
            if (frame.Header.Type == DataFrameType.Data)
            {
                Frames?.Append(frame);
                if (length == 0) continue;
                segments[n++] = frame.Payload[..length]; // a sealed frame's tag is not payload
                WireBytes += length;
            }
            else if (frame.Header.Type == DataFrameType.End)
            {
                End = EndOfStream.Parse(frame.Payload.Span);
            }
        }
        return n == 0 && End is null ? -1 : n;
    }

    /// <inheritdoc />
    public void ReleaseHeld(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        _releasedPart += bytes;
        int frames = 0;
        while (_held.Count > 0 && _held.Peek() <= _releasedPart)
        {
            _releasedPart -= _held.Dequeue();
            frames++;
        }
        if (_held.Count == 0 && _releasedPart > 0) throw new InvalidOperationException($"released {_releasedPart} bytes more than were held");
        if (frames > 0) _cursor.Advance(frames);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    // Takes hold of a frame; false at the End frame.
    private bool Begin(RingFrame frame)
    {
        _frame = frame;
        _holding = true;
        _consumed = 0;
        if (frame.Header.Type == DataFrameType.Data) Frames?.Append(frame);
        if (frame.Header.Type != DataFrameType.End) return true;
        End = EndOfStream.Parse(frame.Payload.Span);
        Release();
        return false;
    }

    // Copies what is left of the held frame; releases the slot as soon as it is drained.
    private int CopyOut(Span<byte> buffer)
    {
        int n = Math.Min(_frame.Header.PlaintextLength - _consumed, buffer.Length);
        _frame.Payload.Span.Slice(_consumed, n).CopyTo(buffer);
        _consumed += n;
        WireBytes += n;
        if (_consumed == _frame.Header.PlaintextLength) Release();
        return n;
    }

    private void Release()
    {
        _holding = false;
        _cursor.Advance();
    }

    // The caller is done with the segment it was lent: its slot may be reused.
    private void ReturnLent()
    {
        if (_held.Count > 0 && End is null) throw new InvalidOperationException("held and copied reads do not mix");
        if (!_lent) return;
        _lent = false;
        Release();
    }

    public override long Position { get => WireBytes; set => throw new NotSupportedException(); }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _lent = false;
            _cursor.Dispose();
        }
        base.Dispose(disposing);
    }
}
