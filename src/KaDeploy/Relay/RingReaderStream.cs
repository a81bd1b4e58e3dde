using KaDeploy.IO;
using KaDeploy.Protocol;

namespace KaDeploy.Relay;

/// <summary>
/// The local sink's view of the ring: a read-only stream of the Data payloads in order, ending at the
/// End frame (whose contents are then in <see cref="End"/>). <see cref="ReadSegmentAsync"/> lends a frame's
/// payload straight from its ring slot, which stays held until the next read; <see cref="LendAsync"/> lends many
/// frames at a time, held until the sink returns them (<see cref="ISegmentRunReader"/>).
/// </summary>
public sealed class RingReaderStream : SequentialReadStream, ISegmentReader, ISegmentRunReader
{
    /// <summary>Most frames one <see cref="LendAsync"/> takes: a ring segment's worth, about 1 MiB.</summary>
    public const int MaxRunFrames = RelayRing.SegmentSlots;

    private readonly RingCursor _cursor;
    private RingFrame _frame;
    private int _consumed;
    private bool _holding;
    private bool _lent; // the held frame was lent whole: release it at the next read

    // Frames lent by LendAsync are the cursor's next `_taken` frames: it has not advanced past them, so the ring
    // cannot reuse their slots. Each lent segment stands for its frame and the empty frames taken before it.
    private RingFrame[]? _run;
    private readonly Queue<int> _lentFrames = new();
    private int _taken;
    private int _emptyTaken; // empty Data frames taken after the last lent segment
    private bool _endHeld;   // the End frame was taken while frames were lent: passed when they are all returned

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
        ReturnRuns();
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
        ReturnRuns();
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
        ReturnRuns();
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

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    /// <inheritdoc />
    public bool LendsRuns => true;

    /// <inheritdoc />
    public int Outstanding => _lentFrames.Count;

    /// <inheritdoc />
    public async ValueTask<int> LendAsync(Memory<ReadOnlyMemory<byte>> segments, CancellationToken cancellationToken)
    {
        if (segments.IsEmpty) throw new ArgumentException("no room for a segment", nameof(segments));
        ReturnLent();
        if (_holding) throw new InvalidOperationException("a frame is partly read: read it to its end before lending runs");
        _run ??= new RingFrame[MaxRunFrames];
        while (true)
        {
            if (End is not null) return 0;
            int n = await _cursor.NextFramesAsync(_taken, _run.AsMemory(0, Math.Min(segments.Length, MaxRunFrames)), cancellationToken).ConfigureAwait(false);
            var into = segments.Span;
            int lent = 0;
            for (int i = 0; i < n; i++)
            {
                _taken++;
                if (!Begin(_run[i])) break; // the End frame, the last of its run
                _holding = false; // lent, not held: Return releases it
                int length = _frame.Header.PlaintextLength; // a sealed frame's tag is not payload
                if (length == 0)
                {
                    _emptyTaken++; // nothing to lend: given back with the next segment
                    continue;
                }
                into[lent++] = _frame.Payload[..length];
                _lentFrames.Enqueue(1 + _emptyTaken);
                _emptyTaken = 0;
                WireBytes += length;
            }
            Array.Clear(_run, 0, n); // no stale references to slots once given back
            ReleaseEndIfDone();
            if (lent > 0) return lent;
        }
    }

    /// <inheritdoc />
    public void Return(int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, _lentFrames.Count);
        int frames = 0;
        for (int i = 0; i < count; i++) frames += _lentFrames.Dequeue();
        if (frames > 0)
        {
            _taken -= frames;
            _cursor.Advance(frames);
        }
        ReleaseEndIfDone();
    }

    // Once nothing is lent, the End frame (and the empty frames before it) are passed.
    private void ReleaseEndIfDone()
    {
        if (!_endHeld || _lentFrames.Count > 0) return;
        _endHeld = false;
        _cursor.Advance(_taken);
        _taken = 0;
        _emptyTaken = 0;
    }

    // Another kind of read after runs were lent: whatever is still lent is given back first, in order.
    private void ReturnRuns()
    {
        if (_taken == 0) return;
        _lentFrames.Clear();
        if (End is null)
        {
            _cursor.Advance(_taken);
            _taken = 0;
            _emptyTaken = 0;
        }
        else
        {
            ReleaseEndIfDone();
        }
    }

    // Takes hold of a frame; false at the End frame.
    private bool Begin(RingFrame frame)
    {
        _frame = frame;
        _holding = true;
        _consumed = 0;
        if (frame.Header.Type == DataFrameType.Data) Frames?.Append(frame);
        if (frame.Header.Type != DataFrameType.End) return true;
        End = EndOfStream.Parse(frame.Payload.Span);
        if (_taken == 0) Release();
        else _endHeld = true; // taken by LendAsync behind frames still lent: passed after them (ReleaseEndIfDone)
        _holding = false;
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
