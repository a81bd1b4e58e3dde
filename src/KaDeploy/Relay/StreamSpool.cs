using Microsoft.Win32.SafeHandles;
using KaDeploy.Protocol;

namespace KaDeploy.Relay;

/// <summary>
/// The server's copy of the wire stream it produced, frame by frame (the exact bytes that went on the
/// wire), so that a node can be served from any offset after every relay has let it go: an orphan whose
/// resume offset left every ancestor's ring, or a slow node moved onto a branch of its own.
/// In a directory (--spool DIR) it keeps the whole stream in an unlinked file, fed by a cursor of the
/// server's ring (<see cref="RunAsync"/>), so nothing leaves the ring before it is spooled.
/// In memory it is the server's ring itself, made with a retention of the spool's size
/// (<see cref="InRing"/>): the frames stay in the slots they were produced into, by reference, until the
/// ring needs the slot again; nothing is copied (issue 10: a copy of every frame into fresh memory
/// cost the server about as much CPU as producing and sending the stream). A resume served from there
/// is an ordinary reader of the ring: it holds the producer back only until it is within a buffer of
/// the front, instead of falling further behind and failing once the spool lets its offset go.
/// For a source the server can read again (an uncompressed image file, a block device) it keeps neither: only an
/// index, and a resume is served by making the frames again from the file (<see cref="FromSource"/>, SourceSpool.cs).
/// The three are separate implementations behind this type (made by the constructor, <see cref="InRing"/> and <see cref="FromSource"/>).
/// </summary>
public sealed partial class StreamSpool : IDisposable
{
    private readonly Spool _spool;

    /// <summary>A spool in <paramref name="directory"/>: a file deleted when closed, holding the whole stream.</summary>
    public StreamSpool(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        _spool = new FileSpool(directory);
    }

    private StreamSpool(Spool spool) => _spool = spool;

    /// <summary>
    /// The memory spool: the frames <paramref name="ring"/> still holds, window and retention (make the server's
    /// ring with a retention of the spool's size). Nothing is copied and <see cref="RunAsync"/> is not needed.
    /// </summary>
    public static StreamSpool InRing(RelayRing ring)
    {
        ArgumentNullException.ThrowIfNull(ring);
        return new StreamSpool(new RingSpool(ring));
    }

    /// <summary>True when the spool keeps its own copy and must be fed every frame by <see cref="RunAsync"/> (a file spool).</summary>
    public bool NeedsFeed => _spool.NeedsFeed;

    /// <summary>Where the frames are kept (for the log).</summary>
    public string Description => _spool.Description;

    /// <summary>
    /// How many of the stream's last wire bytes the spool still holds once the stream has ended: null for a file or
    /// source spool (all of them). A node that needs an older offset after the end cannot be fed from here.
    /// </summary>
    public long? KeepsLastBytes => _spool.KeepsLastBytes;

    /// <summary>Copies every frame of <paramref name="cursor"/> into the spool file until the End frame (a file spool only).</summary>
    public Task RunAsync(RingCursor cursor, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(cursor);
        return _spool.RunAsync(cursor, cancellationToken);
    }

    /// <summary>Null if the spool can serve from <paramref name="offset"/> (now or once produced), else why not.</summary>
    public string? CannotServe(long offset) => _spool.CannotServe(offset);

    /// <summary>
    /// Writes the frames from <paramref name="offset"/> to the End frame to <paramref name="link"/>, waiting
    /// for frames not produced yet. Throws <see cref="KaDeployException"/> if the spool no longer holds them.
    /// </summary>
    public Task ServeAsync(Stream link, long offset, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(link);
        return _spool.ServeAsync(link, offset, cancellationToken);
    }

    /// <inheritdoc/>
    public void Dispose() => _spool.Dispose();

    // One kind of spool; StreamSpool is the public face of either.
    private abstract class Spool(string description) : IDisposable
    {
        public string Description { get; } = description;
        public abstract bool NeedsFeed { get; }
        public virtual long? KeepsLastBytes => null;
        public virtual Task RunAsync(RingCursor cursor, CancellationToken cancellationToken) =>
            throw new InvalidOperationException("a memory spool is the ring itself: nothing to feed");
        public abstract string? CannotServe(long offset);
        public abstract Task ServeAsync(Stream link, long offset, CancellationToken cancellationToken);
        public virtual void Dispose() { }
    }

    // The memory spool: the server's ring, read by reference.
    private sealed class RingSpool(RelayRing ring) : Spool($"memory (the last {HeldWireBytes(ring) >> 20} MiB of the stream, kept in the relay buffer)")
    {
        // Wire bytes the ring's slots can hold at most (full frames).
        private static long HeldWireBytes(RelayRing ring) => (long)ring.SlotCount * ProtocolConstants.MaxChunkPayload;

        public override bool NeedsFeed => false;

        // The slot being overwritten last may be partly gone: one frame less than the ring holds.
        public override long? KeepsLastBytes => (long)(ring.SlotCount - 1) * ProtocolConstants.MaxChunkPayload;

        public override string? CannotServe(long offset)
        {
            if (ring.FindSequence(offset) is not null) return null;
            long next = ring.NextOffset;
            return offset < next
                ? $"offset {offset} is older than the spool holds (the last {HeldWireBytes(ring) >> 20} MiB, up to {next}; use --spool DIR to keep the whole stream)"
                : $"offset {offset} is not in the stream (it stands at {next})";
        }

        // A reader of the ring like any child link, from the retained frame that holds the offset.
        public override async Task ServeAsync(Stream link, long offset, CancellationToken cancellationToken)
        {
            long sequence = ring.FindSequence(offset) ?? throw new KaDeployException($"offset {offset} left the memory spool before it was sent");
            RingCursor cursor;
            try
            {
                cursor = ring.Attach("spool reader", sequence);
            }
            catch (KaDeployException e)
            {
                // Released between the check and the attach: the frames were overwritten while the reader waited for its turn.
                throw new KaDeployException($"offset {offset} left the memory spool before it was sent ({e.Message})", e);
            }
            await new ChildSender(cursor, link).RunAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    // The file spool: the whole stream in an unlinked file, fed frame by frame from a cursor of the server's ring.
    private sealed class FileSpool : Spool
    {
        private readonly object _gate = new();
        private readonly SafeFileHandle _file;
        private readonly List<(long Offset, long Position, int Length, DataFrameType Type)> _index = [];
        private long _fileLength;
        private long _nextOffset; // wire offset after the last Data frame (a sealed frame's tag is not stream bytes)
        private bool _complete;
        private string? _failure;
        private TaskCompletionSource _grown = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public FileSpool(string directory) : base($"file in {directory}")
        {
            string path = Path.Combine(directory, $".ka-deploy-spool-{Environment.ProcessId}-{Guid.NewGuid():N}");
            try
            {
                _file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new KaDeployException($"--spool {directory}: {e.Message}");
            }
        }

        public override bool NeedsFeed => true;

        public override async Task RunAsync(RingCursor cursor, CancellationToken cancellationToken)
        {
            try
            {
                while (true)
                {
                    var frame = await cursor.NextAsync(cancellationToken).ConfigureAwait(false);
                    await AppendAsync(frame.Header, frame.Bytes, cancellationToken).ConfigureAwait(false);
                    cursor.Advance();
                    if (frame.Header.Type == DataFrameType.End) return;
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or KaDeployException)
            {
                // A full spool disk must not stop the session: the spool stops, resumes it cannot serve fail with this reason.
                lock (_gate) _failure = $"spool failed: {e.Message}";
                Signal();
            }
            finally
            {
                cursor.Dispose();
            }
        }

        private async ValueTask AppendAsync(DataFrameHeader header, ReadOnlyMemory<byte> bytes, CancellationToken ct)
        {
            long position;
            lock (_gate) position = _fileLength;
            await RandomAccess.WriteAsync(_file, bytes, position, ct).ConfigureAwait(false);
            lock (_gate)
            {
                _index.Add((header.Offset, position, bytes.Length, header.Type));
                _fileLength += bytes.Length;
                if (header.Type == DataFrameType.Data) _nextOffset = header.Offset + header.PlaintextLength;
                if (header.Type == DataFrameType.End) _complete = true;
            }
            Signal();
        }

        private void Signal()
        {
            TaskCompletionSource old;
            lock (_gate) { old = _grown; _grown = new(TaskCreationOptions.RunContinuationsAsynchronously); }
            old.TrySetResult();
        }

        public override string? CannotServe(long offset)
        {
            lock (_gate)
            {
                if (_failure is not null) return _failure;
                if (FindLocked(offset) is not null) return null;
                if (!_complete && offset == _nextOffset) return null;
                return $"offset {offset} is not a frame boundary of the stream";
            }
        }

        private int? FindLocked(long offset)
        {
            int lo = 0, hi = _index.Count - 1;
            while (lo <= hi)
            {
                int mid = (lo + hi) / 2;
                if (_index[mid].Offset < offset) lo = mid + 1; else hi = mid - 1;
            }
            return lo < _index.Count && _index[lo].Offset == offset ? lo : null;
        }

        public override async Task ServeAsync(Stream link, long offset, CancellationToken cancellationToken)
        {
            int index;
            lock (_gate) index = FindLocked(offset) ?? -1;
            byte[] buffer = new byte[RelayRing.SlotSize];
            while (true)
            {
                Task grown;
                (long Offset, long Position, int Length, DataFrameType Type) entry = default;
                lock (_gate)
                {
                    if (index < 0)
                    {
                        if (CannotServe(offset) is { } why) throw new KaDeployException(why);
                        index = FindLocked(offset) ?? -1;
                    }
                    if (index >= 0 && index < _index.Count)
                    {
                        entry = _index[index];
                        grown = Task.CompletedTask;
                    }
                    else
                    {
                        if (_failure is not null) throw new KaDeployException(_failure);
                        grown = _grown.Task;
                    }
                }
                if (!grown.IsCompleted)
                {
                    await grown.WaitAsync(cancellationToken).ConfigureAwait(false);
                    continue;
                }
                int got = await RandomAccess.ReadAsync(_file, buffer.AsMemory(0, entry.Length), entry.Position, cancellationToken).ConfigureAwait(false);
                if (got != entry.Length) throw new KaDeployException($"spool file short read at {entry.Position}");
                await link.WriteAsync(buffer.AsMemory(0, entry.Length), cancellationToken).ConfigureAwait(false);
                index++;
                if (entry.Type == DataFrameType.End)
                {
                    await link.FlushAsync(cancellationToken).ConfigureAwait(false);
                    return;
                }
            }
        }

        public override void Dispose() => _file.Dispose();
    }
}
