using System.Diagnostics;
using KaDeploy.Protocol;

namespace KaDeploy.Relay;

/// <summary>A frame in the ring: the exact bytes that travel on a data link (header + payload).</summary>
public readonly struct RingFrame(byte[] buffer, int length, DataFrameHeader header, long sequence)
{
    /// <summary>Header followed by payload, ready to forward byte for byte.</summary>
    public ReadOnlyMemory<byte> Bytes => buffer.AsMemory(0, length);
    /// <summary>The payload alone, in clear: a sealed frame's opened plaintext lies after the wire bytes (<see cref="RelayRing.PlaintextOffset"/>).</summary>
    public ReadOnlyMemory<byte> Payload => header.IsSealed
        ? buffer.AsMemory(RelayRing.PlaintextOffset, header.PlaintextLength)
        : buffer.AsMemory(DataFrameHeader.Size, length - DataFrameHeader.Size);
    public DataFrameHeader Header => header;
    public long Sequence => sequence;
}

/// <summary>
/// The bounded buffer every node relays through: one producer (the upstream link, or the server's
/// source) writes frames into fixed slots; each consumer (a child link, the local sink) reads them
/// at its own pace through a <see cref="RingCursor"/>. The producer waits when the slowest consumer is
/// a whole ring behind, which is how backpressure travels up to the server. Slots are only reused
/// when every consumer has passed them, and until then they stay readable by sequence number, so a
/// reconnecting child can resume from any offset the ring still holds. With a retention (--retain),
/// the last frames every consumer has passed are kept that much longer: an orphan re-attaching after
/// its parent died is behind that parent by whatever was in flight, and finds it here.
/// </summary>
public sealed class RelayRing : IDisposable
{
    /// <summary>Bytes of one slot: a header and the largest payload.</summary>
    public const int SlotSize = DataFrameHeader.Size + ProtocolConstants.MaxChunkPayload;

    /// <summary>
    /// In a ring of sealed frames, where each slot keeps the frame's plaintext: after the wire bytes,
    /// which are forwarded as they arrived (relays never re-encrypt), so the local sink reads clear
    /// bytes that were opened once.
    /// </summary>
    public const int PlaintextOffset = SlotSize;

    private readonly int _slotBytes;

    private readonly object _gate = new();
    private readonly byte[]?[] _buffers;
    private readonly int[] _lengths;
    private readonly DataFrameHeader[] _headers;
    private readonly List<RingCursor> _cursors = [];
    private readonly SemaphoreSlim _spaceSignal = new(0, 1);
    private readonly int _window;
    private bool _producerWaiting;
    private bool _acquired; // the producer holds the slot of `_published`: the frame SlotCount back is being overwritten
    private long _nextOffset; // wire offset after the last Data frame published
    private long _published;
    private bool _completed;
    private Exception? _fault;

    /// <param name="capacityBytes">Buffer size (--buffer): how far the fastest consumer may run ahead of the slowest; at least four slots.</param>
    /// <param name="retainBytes">Kept behind the slowest consumer for children that resume (--retain).</param>
    /// <param name="sealedFrames">The session is keyed: each slot also holds the opened plaintext (<see cref="PlaintextOffset"/>).</param>
    public RelayRing(long capacityBytes, long retainBytes = 0, bool sealedFrames = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacityBytes, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(retainBytes);
        _slotBytes = sealedFrames ? SlotSize + ProtocolConstants.MaxChunkPayload : SlotSize;
        IsSealed = sealedFrames;
        _window = (int)Math.Clamp(capacityBytes / _slotBytes, 4, 1 << 16);
        int slots = _window + (int)Math.Clamp((retainBytes + _slotBytes - 1) / _slotBytes, 0, 1 << 16);
        _buffers = new byte[slots][];
        _lengths = new int[slots];
        _headers = new DataFrameHeader[slots];
    }

    /// <summary>Slots have room for a sealed frame's plaintext.</summary>
    public bool IsSealed { get; }

    /// <summary>Number of slots (window and retention).</summary>
    public int SlotCount => _buffers.Length;

    /// <summary>Slots the fastest consumer may be ahead of the slowest.</summary>
    public int WindowSlots => _window;

    /// <summary>Wire offset just after the last Data frame published: where the next frame starts.</summary>
    public long NextOffset { get { lock (_gate) return _nextOffset; } }

    /// <summary>True once the End frame is published.</summary>
    public bool IsComplete { get { lock (_gate) return _completed; } }

    // The oldest sequence still readable.
    private long RetainedFromLocked() => Math.Max(0, _published - SlotCount + (_acquired ? 1 : 0));

    /// <summary>Frames published so far.</summary>
    public long Published { get { lock (_gate) return _published; } }

    /// <summary>Attaches a consumer that will read from <paramref name="fromSequence"/> (0 = the beginning).</summary>
    public RingCursor Attach(string name, long fromSequence = 0)
    {
        lock (_gate)
        {
            if (fromSequence < RetainedFromLocked() || fromSequence > _published)
                throw new KaDeployException($"{name}: frame {fromSequence} is no longer (or not yet) in the buffer");
            var c = new RingCursor(this, name, fromSequence);
            _cursors.Add(c);
            return c;
        }
    }

    /// <summary>
    /// Sequence of the retained frame holding wire offset <paramref name="offset"/>, the next one to be
    /// published when the offset is where the stream stands now, or null when the ring no longer holds it.
    /// </summary>
    public long? FindSequence(long offset)
    {
        lock (_gate)
        {
            long from = RetainedFromLocked();
            if (from < _published && offset >= _headers[from % SlotCount].Offset)
            {
                // Frames are contiguous: search by bisection, not by walking thousands of slots under the lock.
                long lo = from, hi = _published - 1;
                while (lo < hi)
                {
                    long mid = lo + (hi - lo + 1) / 2;
                    if (_headers[mid % SlotCount].Offset <= offset) lo = mid; else hi = mid - 1;
                }
                var h = _headers[lo % SlotCount];
                if (offset < h.Offset + Math.Max(1, h.PlaintextLength)) return lo;
            }
            if (offset == _nextOffset && !_completed && (from == _published || offset >= _headers[from % SlotCount].Offset)) return _published;
            return null;
        }
    }

    internal void Detach(RingCursor cursor)
    {
        lock (_gate)
        {
            _cursors.Remove(cursor);
            WakeProducer();
        }
    }

    /// <summary>Waits for the next free slot and returns its buffer (<see cref="SlotSize"/> bytes) for the producer to fill.</summary>
    public async ValueTask<byte[]> AcquireAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            lock (_gate)
            {
                if (TryAcquire(out var buffer)) return buffer;
                _producerWaiting = true;
            }
            await _spaceSignal.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Blocking variant of <see cref="AcquireAsync"/> for synchronous writers (compressors).</summary>
    public byte[] Acquire(CancellationToken cancellationToken)
    {
        while (true)
        {
            lock (_gate)
            {
                if (TryAcquire(out var buffer)) return buffer;
                _producerWaiting = true;
            }
            _spaceSignal.Wait(cancellationToken);
        }
    }

    private bool TryAcquire(out byte[] buffer)
    {
        if (_fault is not null) throw new KaDeployException("relay buffer failed: " + _fault.Message, _fault);
        if (_completed) throw new InvalidOperationException("ring already completed");
        long oldest = _published;
        foreach (var c in _cursors) oldest = Math.Min(oldest, c.Position);
        if (_published - oldest >= _window || (oldest < _published && _published - oldest >= SlotCount))
        {
            buffer = null!;
            return false;
        }
        _acquired = true;
        int slot = (int)(_published % SlotCount);
        // Pinned heap: slots live as long as the ring and are handed to socket I/O; the GC never moves or copies them.
        buffer = _buffers[slot] ??= GC.AllocateUninitializedArray<byte>(_slotBytes, pinned: true);
        return true;
    }

    /// <summary>Publishes the slot last acquired, holding a frame of <paramref name="length"/> bytes.</summary>
    public void Publish(DataFrameHeader header, int length)
    {
        Debug.Assert(length == DataFrameHeader.Size + header.PayloadLength);
        lock (_gate)
        {
            int slot = (int)(_published % SlotCount);
            _lengths[slot] = length;
            _headers[slot] = header;
            _published++;
            _acquired = false;
            if (header.Type == DataFrameType.Data) _nextOffset = header.Offset + header.PlaintextLength;
            if (header.Type == DataFrameType.End) _completed = true;
            foreach (var c in _cursors) c.WakeLocked();
        }
    }

    /// <summary>Fails every consumer and the producer with <paramref name="error"/>.</summary>
    public void Fault(Exception error)
    {
        lock (_gate)
        {
            _fault ??= error;
            foreach (var c in _cursors) c.WakeLocked();
            WakeProducer();
        }
    }

    /// <summary>
    /// The consumer holding the producer back, if it has not moved for <paramref name="limit"/>: the ring is
    /// full, the producer waits, and this cursor is a whole ring behind. A slow consumer keeps moving and is
    /// never returned; a hung one (a stopped process whose kernel still acknowledges, a disk that no longer
    /// answers) is, so that the owner can give up on it and let everyone else go on.
    /// </summary>
    public RingCursor? FindStalled(TimeSpan limit)
    {
        lock (_gate)
        {
            if (!_producerWaiting) return null;
            RingCursor? oldest = null;
            foreach (var c in _cursors)
                if (oldest is null || c.Position < oldest.Position) oldest = c;
            if (oldest is null || _published - oldest.Position < _window) return null;
            return Environment.TickCount64 - oldest.LastProgress >= (long)limit.TotalMilliseconds ? oldest : null;
        }
    }

    /// <summary>The consumer the producer is waiting for right now (the ring is full because of it), or null.</summary>
    public RingCursor? Holder()
    {
        lock (_gate)
        {
            if (!_producerWaiting) return null;
            RingCursor? oldest = null;
            foreach (var c in _cursors)
                if (oldest is null || c.Position < oldest.Position) oldest = c;
            return oldest is not null && _published - oldest.Position >= _window ? oldest : null;
        }
    }

    internal bool TryRead(RingCursor cursor, out RingFrame frame)
    {
        lock (_gate)
        {
            if (cursor.EvictedReason is { } evicted) throw new KaDeployException(evicted);
            if (cursor.Position < _published)
            {
                int slot = (int)(cursor.Position % SlotCount);
                frame = new RingFrame(_buffers[slot]!, _lengths[slot], _headers[slot], cursor.Position);
                return true;
            }
            if (_fault is not null) throw new KaDeployException("upstream failed: " + _fault.Message, _fault);
            cursor.Waiting = true;
            frame = default;
            return false;
        }
    }

    internal void Wake(RingCursor cursor)
    {
        lock (_gate) cursor.WakeLocked();
    }

    internal void Advanced()
    {
        lock (_gate) WakeProducer();
    }

    private void WakeProducer()
    {
        if (_producerWaiting)
        {
            _producerWaiting = false;
            _spaceSignal.Release();
        }
    }

    public void Dispose() => _spaceSignal.Dispose();
}

/// <summary>One consumer's position in a <see cref="RelayRing"/>.</summary>
public sealed class RingCursor : IDisposable
{
    private readonly RelayRing _ring;
    private readonly SemaphoreSlim _signal = new(0, 1);

    private readonly TaskCompletionSource<string> _evicted = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _lastProgress = Environment.TickCount64;

    internal RingCursor(RelayRing ring, string name, long position)
    {
        _ring = ring;
        Name = name;
        Position = position;
    }

    /// <summary>When this consumer last took a frame (Environment.TickCount64).</summary>
    internal long LastProgress => Volatile.Read(ref _lastProgress);

    /// <summary>Why the ring gave up on this consumer, or null.</summary>
    public string? EvictedReason { get; private set; }

    /// <summary>Completes with the reason when the ring gives up on this consumer.</summary>
    public Task<string> Evicted => _evicted.Task;

    /// <summary>
    /// Gives up on this consumer: detaches it so the producer moves on, and makes its next read throw.
    /// A read or write it has in flight may see its slot reused; the consumer's output is void from now on.
    /// </summary>
    public void Evict(string reason)
    {
        EvictedReason ??= reason;
        _ring.Detach(this);
        _evicted.TrySetResult(EvictedReason);
        _ring.Wake(this);
    }

    /// <summary>Who reads (for messages).</summary>
    public string Name { get; }

    /// <summary>Sequence of the next frame this consumer will read. Written only under the ring's lock or by its owner.</summary>
    public long Position { get; private set; }

    internal bool Waiting { get; set; }

    /// <summary>Waits for the frame at <see cref="Position"/>. The frame stays valid until <see cref="Advance"/>.</summary>
    public async ValueTask<RingFrame> NextAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            if (_ring.TryRead(this, out var frame)) return frame;
            await _signal.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Blocking variant of <see cref="NextAsync"/>.</summary>
    public RingFrame Next(CancellationToken cancellationToken)
    {
        while (true)
        {
            if (_ring.TryRead(this, out var frame)) return frame;
            _signal.Wait(cancellationToken);
        }
    }

    /// <summary>Releases the current frame and moves to the next.</summary>
    public void Advance()
    {
        Volatile.Write(ref _lastProgress, Environment.TickCount64);
        Position++;
        _ring.Advanced();
    }

    internal void WakeLocked()
    {
        if (Waiting)
        {
            Waiting = false;
            _signal.Release();
        }
    }

    /// <summary>Stops holding back the producer.</summary>
    public void Dispose()
    {
        _ring.Detach(this);
    }
}
