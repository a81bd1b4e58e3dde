using System.Diagnostics;
using System.Runtime.InteropServices;
using KaDeploy.Protocol;

namespace KaDeploy.Relay;

/// <summary>A frame in the ring: the exact bytes that travel on a data link (header + payload).</summary>
public readonly struct RingFrame(byte[] buffer, int start, int length, DataFrameHeader header, long sequence)
{
    /// <summary>Header followed by payload, ready to forward byte for byte.</summary>
    public ReadOnlyMemory<byte> Bytes => buffer.AsMemory(start, length);
    /// <summary>The payload alone, in clear: a sealed frame's opened plaintext lies in its segment's plaintext block (<see cref="RelayRing.PlaintextOf"/>).</summary>
    public ReadOnlyMemory<byte> Payload => header.IsSealed
        ? buffer.AsMemory(RelayRing.PlaintextStart(buffer, start), header.PlaintextLength)
        : buffer.AsMemory(start + DataFrameHeader.Size, length - DataFrameHeader.Size);
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
/// Slots are laid out back to back in segments of <see cref="SegmentSlots"/> (issue 10): full-size frames
/// in consecutive slots are consecutive bytes, so the receiver reads many frames with one system call
/// (<see cref="AcquireRunAsync"/>) and a child sender writes many with one (<see cref="RingCursor.NextRunAsync"/>).
/// </summary>
public sealed class RelayRing : IDisposable
{
    /// <summary>Bytes of one slot: a header and the largest payload.</summary>
    public const int SlotSize = DataFrameHeader.Size + ProtocolConstants.MaxChunkPayload;

    /// <summary>
    /// Bytes a sealed ring keeps per slot for the frame's opened plaintext, beside its wire bytes (which are
    /// forwarded as they arrived: relays never re-encrypt), so the local sink reads clear bytes opened once.
    /// </summary>
    public const int PlaintextSize = ProtocolConstants.MaxChunkPayload;

    /// <summary>Slots per contiguous segment: the most frames one receive or one send moves (about 1 MiB).</summary>
    public const int SegmentSlots = 16;

    private readonly int _slotBytes; // memory per slot: the wire slot, and in a sealed ring its plaintext too
    private readonly int _slotCount;

    private readonly object _gate = new();
    private readonly byte[]?[] _segments;
    private readonly int[] _lengths;
    private readonly DataFrameHeader[] _headers;
    private readonly List<RingCursor> _cursors = [];
    private readonly SemaphoreSlim _spaceSignal = new(0, 1);
    private readonly int _window;
    private bool _producerWaiting;
    private int _reserved; // slots from `_published` on that the producer holds: the frames SlotCount back are being overwritten
    private long _nextOffset; // wire offset after the last Data frame published
    private long _published;
    private bool _completed;
    private Exception? _fault;

    /// <param name="capacityBytes">Buffer size (--buffer): how far the fastest consumer may run ahead of the slowest; at least four slots.</param>
    /// <param name="retainBytes">Kept behind the slowest consumer for children that resume (--retain).</param>
    /// <param name="sealedFrames">The session is keyed: each slot also has room for the opened plaintext (<see cref="PlaintextOf"/>).</param>
    public RelayRing(long capacityBytes, long retainBytes = 0, bool sealedFrames = false)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacityBytes, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(retainBytes);
        _slotBytes = sealedFrames ? SlotSize + PlaintextSize : SlotSize;
        IsSealed = sealedFrames;
        _window = (int)Math.Clamp(capacityBytes / _slotBytes, 4, 1 << 16);
        int slots = _window + (int)Math.Clamp((retainBytes + _slotBytes - 1) / _slotBytes, 0, 1 << 16);
        _slotCount = slots;
        _segments = new byte[(slots + SegmentSlots - 1) / SegmentSlots][];
        _lengths = new int[slots];
        _headers = new DataFrameHeader[slots];
    }

    /// <summary>Slots have room for a sealed frame's plaintext.</summary>
    public bool IsSealed { get; }

    /// <summary>Number of slots (window and retention).</summary>
    public int SlotCount => _slotCount;

    /// <summary>
    /// Where the plaintext of the slot that starts at <paramref name="slot"/>'s first byte is kept, in a sealed ring
    /// (<see cref="PlaintextSize"/> bytes). A segment of a sealed ring holds its wire slots back to back, then one
    /// plaintext area per slot in the same order: sealed frames are received and forwarded many at a time, as clear
    /// ones are, and each is opened into its own area.
    /// </summary>
    public Memory<byte> PlaintextOf(Memory<byte> slot)
    {
        if (!IsSealed) throw new InvalidOperationException("a clear ring keeps no plaintext beside its frames");
        if (!MemoryMarshal.TryGetArray<byte>(slot, out var segment)) throw new ArgumentException("not a slot of this ring", nameof(slot));
        return segment.Array.AsMemory(PlaintextStart(segment.Array!, segment.Offset), PlaintextSize);
    }

    // A sealed segment of n slots: n wire slots, then n plaintext areas (its length says n).
    internal static int PlaintextStart(byte[] segment, int slotStart)
    {
        int slots = segment.Length / (SlotSize + PlaintextSize);
        Debug.Assert(slotStart % SlotSize == 0 && slotStart / SlotSize < slots);
        return slots * SlotSize + slotStart / SlotSize * PlaintextSize;
    }

    /// <summary>Slots the fastest consumer may be ahead of the slowest.</summary>
    public int WindowSlots => _window;

    /// <summary>Wire offset just after the last Data frame published: where the next frame starts.</summary>
    public long NextOffset { get { lock (_gate) return _nextOffset; } }

    /// <summary>True once the End frame is published.</summary>
    public bool IsComplete { get { lock (_gate) return _completed; } }

    // The oldest sequence still readable.
    private long RetainedFromLocked() => Math.Max(0, _published - SlotCount + _reserved);

    /// <summary>
    /// The oldest wire offset this ring still holds (a child may resume from it): the first retained frame's offset, or
    /// <see cref="NextOffset"/> when nothing is retained. A node reports it in its heartbeats, so that a repair sends an
    /// orphan only to a parent that still holds the orphan's offset.
    /// </summary>
    public long RetainedFromOffset
    {
        get
        {
            lock (_gate)
            {
                long from = RetainedFromLocked();
                return from < _published ? _headers[from % SlotCount].Offset : _nextOffset;
            }
        }
    }

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

    /// <summary>Waits for the next free slot and returns it (<see cref="SlotSize"/> bytes) for the producer to fill.</summary>
    public ValueTask<Memory<byte>> AcquireAsync(CancellationToken cancellationToken) => AcquireRunAsync(1, cancellationToken);

    /// <summary>
    /// Waits for a free slot and reserves it with up to <paramref name="maxSlots"/> - 1 more that follow it in
    /// memory (as many as the window and the segment allow): a run of whole slots, <see cref="SlotSize"/>
    /// bytes each (a sealed ring's plaintext areas lie elsewhere: <see cref="PlaintextOf"/>), that the producer fills and publishes one by one, in order. Slots of an earlier run that were
    /// never published (a receiver whose link broke) are given up: the new run starts at the next frame.
    /// </summary>
    public async ValueTask<Memory<byte>> AcquireRunAsync(int maxSlots, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSlots, 1);
        while (true)
        {
            Memory<byte> run;
            byte[]? fresh;
            lock (_gate)
            {
                if (!TryAcquire(maxSlots, out run, out fresh)) _producerWaiting = true;
            }
            if (!run.IsEmpty) return RingMemory.Populated(run, fresh);
            await _spaceSignal.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Blocking variant of <see cref="AcquireAsync"/> for synchronous writers (compressors).</summary>
    public Memory<byte> Acquire(CancellationToken cancellationToken)
    {
        while (true)
        {
            Memory<byte> slot;
            byte[]? fresh;
            lock (_gate)
            {
                if (!TryAcquire(1, out slot, out fresh)) _producerWaiting = true;
            }
            if (!slot.IsEmpty) return RingMemory.Populated(slot, fresh);
            _spaceSignal.Wait(cancellationToken);
        }
    }

    // fresh: the segment was allocated by this call (its pages are populated outside the lock, before the run is used).
    private bool TryAcquire(int maxSlots, out Memory<byte> run, out byte[]? fresh)
    {
        fresh = null;
        if (_fault is not null) throw new KaDeployException("relay buffer failed: " + _fault.Message, _fault);
        if (_completed) throw new InvalidOperationException("ring already completed");
        long oldest = _published;
        foreach (var c in _cursors) oldest = Math.Min(oldest, c.Position);
        long used = _published - oldest;
        if (used >= _window || used >= SlotCount)
        {
            run = default;
            return false;
        }
        int slot = (int)(_published % SlotCount);
        int segment = slot / SegmentSlots, first = segment * SegmentSlots;
        int segmentSlots = Math.Min(SegmentSlots, SlotCount - first);
        int n = (int)Math.Min(Math.Min(maxSlots, _window - used), first + segmentSlots - slot);
        _reserved = n;
        // Pinned (RingMemory): segments live as long as the ring and are handed to socket I/O; the GC never moves them.
        var buffer = _segments[segment] ??= fresh = RingMemory.AllocateSegment(segmentSlots * _slotBytes);
        run = buffer.AsMemory((slot - first) * SlotSize, n * SlotSize);
        return true;
    }

    /// <summary>Publishes the next reserved slot, holding a frame of <paramref name="length"/> bytes.</summary>
    public void Publish(DataFrameHeader header, int length)
    {
        Debug.Assert(length == DataFrameHeader.Size + header.PayloadLength);
        lock (_gate)
        {
            long before = _published;
            PublishLocked(header);
            WakeAllLocked(before);
        }
    }

    // Wakes every consumer; one that had read everything (it waited on the producer, not the other way round) has data
    // again only from now: its stall is counted from here, not from its last frame.
    private void WakeAllLocked(long publishedBefore)
    {
        long now = Environment.TickCount64;
        foreach (var c in _cursors)
        {
            if (c.Position >= publishedBefore) c.AvailableSince = now;
            c.WakeLocked();
        }
    }

    /// <summary>Publishes the next reserved slots in order, one frame each, under one lock and with one wake-up per consumer.</summary>
    public void Publish(ReadOnlySpan<DataFrameHeader> headers)
    {
        if (headers.IsEmpty) return;
        lock (_gate)
        {
            long before = _published;
            foreach (var h in headers) PublishLocked(h);
            WakeAllLocked(before);
        }
    }

    private void PublishLocked(DataFrameHeader header)
    {
        if (_reserved <= 0) throw new InvalidOperationException("publishing a slot that was not acquired");
        int slot = (int)(_published % SlotCount);
        _lengths[slot] = DataFrameHeader.Size + header.PayloadLength;
        _headers[slot] = header;
        _published++;
        _reserved--;
        if (header.Type == DataFrameType.Data) _nextOffset = header.Offset + header.PlaintextLength;
        if (header.Type == DataFrameType.End) _completed = true;
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
            // Idle because it had everything (the producer was held by another consumer) is not stalled: counted from the
            // later of its last frame and the moment data came for it.
            long since = Math.Max(oldest.LastProgress, oldest.AvailableSince);
            return Environment.TickCount64 - since >= (long)limit.TotalMilliseconds ? oldest : null;
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

    // The frame `ahead` frames past the cursor's position: a consumer holding frames it has taken reads on past them.
    // willWait: the caller waits on the cursor's signal when nothing is there (the next publish must wake it).
    internal bool TryRead(RingCursor cursor, out RingFrame frame, int ahead = 0, bool willWait = true)
    {
        lock (_gate)
        {
            if (cursor.EvictedReason is { } evicted) throw new KaDeployException(evicted);
            if (cursor.Position + ahead < _published)
            {
                frame = FrameLocked(cursor.Position + ahead);
                return true;
            }
            if (_fault is not null) throw new KaDeployException("upstream failed: " + _fault.Message, _fault);
            cursor.Waiting = willWait;
            frame = default;
            return false;
        }
    }

    // Published frames from the cursor on that lie back to back in one segment, up to the End frame and about maxBytes.
    internal bool TryReadRun(RingCursor cursor, int maxBytes, out RingRun run)
    {
        lock (_gate)
        {
            if (cursor.EvictedReason is { } evicted) throw new KaDeployException(evicted);
            if (cursor.Position < _published)
            {
                int slot = (int)(cursor.Position % SlotCount);
                int frames = 1, bytes = _lengths[slot];
                bool end = _headers[slot].Type == DataFrameType.End;
                // A frame that fills its slot is followed in memory by the next slot's frame, unless a segment ends there.
                while (!end && bytes == frames * SlotSize && cursor.Position + frames < _published)
                {
                    int next = (int)((cursor.Position + frames) % SlotCount);
                    if (next % SegmentSlots == 0 || bytes + _lengths[next] > maxBytes) break;
                    bytes += _lengths[next];
                    end = _headers[next].Type == DataFrameType.End;
                    frames++;
                }
                run = new RingRun(_segments[slot / SegmentSlots]!, (slot % SegmentSlots) * SlotSize, bytes, frames, _headers[slot], end);
                return true;
            }
            if (_fault is not null) throw new KaDeployException("upstream failed: " + _fault.Message, _fault);
            cursor.Waiting = true;
            run = default;
            return false;
        }
    }

    private RingFrame FrameLocked(long sequence)
    {
        int slot = (int)(sequence % SlotCount);
        return new RingFrame(_segments[slot / SegmentSlots]!, (slot % SegmentSlots) * SlotSize, _lengths[slot], _headers[slot], sequence);
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

/// <summary>Frames that lie back to back in the ring: how many, the first one's header, and their bytes as one block.</summary>
public readonly struct RingRun(byte[] buffer, int start, int length, int frames, DataFrameHeader first, bool endsWithEnd)
{
    /// <summary>Their wire bytes, headers included, ready to forward with one write.</summary>
    public ReadOnlyMemory<byte> Bytes => buffer.AsMemory(start, length);
    /// <summary>Number of frames.</summary>
    public int Frames => frames;
    /// <summary>The first frame's header.</summary>
    public DataFrameHeader First => first;
    /// <summary>The last frame is the End frame.</summary>
    public bool EndsWithEnd => endsWithEnd;
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

    /// <summary>When a frame was last published while this consumer had read all before it (Environment.TickCount64; under the ring's lock).</summary>
    internal long AvailableSince { get; set; }

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

    /// <summary>Waits for the frame at <see cref="Position"/>. The frame stays valid until <see cref="Advance()"/>.</summary>
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

    /// <summary>
    /// Waits for the frame <paramref name="ahead"/> frames past <see cref="Position"/> (blocking): a consumer that still
    /// holds the frames before it (they are released by <see cref="Advance(int)"/>, in order) reads on without letting
    /// them go. The frame stays valid until it is released.
    /// </summary>
    public RingFrame NextAhead(int ahead, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(ahead);
        while (true)
        {
            if (_ring.TryRead(this, out var frame, ahead)) return frame;
            // Sleeps at once: SemaphoreSlim.Wait spins (sched_yield) first, which cost a relay node's pipe feed 3.5 % of its CPU.
            while (!_signal.Wait(0))
            {
                WaitHandle.WaitAny(WaitHandlesFor(cancellationToken));
                cancellationToken.ThrowIfCancellationRequested();
            }
        }
    }

    // The two handles NextAhead sleeps on, made once per token (not an array per wait).
    private WaitHandle[]? _waitHandles;
    private CancellationToken _waitToken;

    private WaitHandle[] WaitHandlesFor(CancellationToken cancellationToken)
    {
        if (_waitHandles is null || _waitToken != cancellationToken)
        {
            _waitHandles = [_signal.AvailableWaitHandle, cancellationToken.WaitHandle];
            _waitToken = cancellationToken;
        }
        return _waitHandles;
    }

    /// <summary>The frame <paramref name="ahead"/> frames past <see cref="Position"/> if it is published already (no wait).</summary>
    public bool TryNextAhead(int ahead, out RingFrame frame)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(ahead);
        return _ring.TryRead(this, out frame, ahead, willWait: false);
    }

    /// <summary>Slots the producer may run ahead of this consumer: frames it holds past that stop the producer.</summary>
    public int WindowSlots => _ring.WindowSlots;

    /// <summary>
    /// Waits for the frame at <see cref="Position"/> and returns it with the published frames that follow it
    /// in memory (up to about <paramref name="maxBytes"/> and the End frame): what one write can send. The
    /// frames stay valid until <see cref="Advance(int)"/>.
    /// </summary>
    public async ValueTask<RingRun> NextRunAsync(int maxBytes, CancellationToken cancellationToken)
    {
        while (true)
        {
            if (_ring.TryReadRun(this, maxBytes, out var run)) return run;
            await _signal.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Releases the current frame and moves to the next.</summary>
    public void Advance() => Advance(1);

    /// <summary>Releases the current <paramref name="frames"/> frames (a run) and moves past them.</summary>
    public void Advance(int frames)
    {
        Volatile.Write(ref _lastProgress, Environment.TickCount64);
        Position += frames;
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
