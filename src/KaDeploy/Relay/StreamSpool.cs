using Microsoft.Win32.SafeHandles;
using KaDeploy.Protocol;

namespace KaDeploy.Relay;

/// <summary>
/// The server's copy of the wire stream it produced, frame by frame (the exact bytes that went on the
/// wire), so that a node can be served from any offset after every relay has let it go: an orphan whose
/// resume offset left every ancestor's ring, or a slow node moved onto a branch of its own. It is fed by
/// a cursor of the server's ring (<see cref="RunAsync"/>), so nothing leaves the ring before it is spooled.
/// In a directory (--spool DIR) it keeps the whole stream in an unlinked file; in memory it keeps the
/// last <c>memoryLimit</c> bytes (the front of the stream, where repairs happen).
/// </summary>
public sealed class StreamSpool : IDisposable
{
    private readonly object _gate = new();
    private readonly SafeFileHandle? _file;
    private readonly long _memoryLimit;
    private readonly List<(long Offset, long Position, int Length, DataFrameType Type)> _index = [];
    private readonly Dictionary<int, byte[]> _memory = [];
    private int _firstHeld; // index of the oldest frame still held (memory spool)
    private long _memoryBytes, _fileLength;
    private long _nextOffset; // wire offset after the last Data frame (a sealed frame's tag is not stream bytes)
    private bool _complete;
    private string? _failure;
    private TaskCompletionSource _grown = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>A spool in <paramref name="directory"/> (a file deleted when closed), or in memory when null.</summary>
    public StreamSpool(string? directory, long memoryLimit = 1L << 30)
    {
        _memoryLimit = memoryLimit;
        if (directory is null) { Description = $"memory (last {memoryLimit >> 20} MiB)"; return; }
        string path = Path.Combine(directory, $".ka-deploy-spool-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            _file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"--spool {directory}: {e.Message}");
        }
        Description = $"file in {directory}";
    }

    /// <summary>Where the frames are kept (for the log).</summary>
    public string Description { get; }

    /// <summary>Copies every frame of <paramref name="cursor"/> into the spool until the End frame.</summary>
    public async Task RunAsync(RingCursor cursor, CancellationToken cancellationToken)
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
        if (_file is not null) await RandomAccess.WriteAsync(_file, bytes, position, ct).ConfigureAwait(false);
        lock (_gate)
        {
            int index = _index.Count;
            _index.Add((header.Offset, position, bytes.Length, header.Type));
            _fileLength += bytes.Length;
            if (header.Type == DataFrameType.Data) _nextOffset = header.Offset + header.PlaintextLength;
            if (_file is null)
            {
                _memory[index] = bytes.ToArray();
                _memoryBytes += bytes.Length;
                while (_memoryBytes > _memoryLimit && _firstHeld < index)
                {
                    _memoryBytes -= _index[_firstHeld].Length;
                    _memory.Remove(_firstHeld++);
                }
            }
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

    /// <summary>Null if the spool can serve from <paramref name="offset"/> (now or once produced), else why not.</summary>
    public string? CannotServe(long offset)
    {
        lock (_gate)
        {
            if (_failure is not null) return _failure;
            if (FindLocked(offset) is not null) return null;
            if (!_complete && offset == _nextOffset) return null;
            if (_index.Count > 0 && _firstHeld < _index.Count && offset < _index[_firstHeld].Offset)
                return $"offset {offset} is older than the spool holds (from {_index[_firstHeld].Offset}; use --spool DIR to keep the whole stream)";
            return $"offset {offset} is not a frame boundary of the stream";
        }
    }

    private int? FindLocked(long offset)
    {
        int lo = _firstHeld, hi = _index.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            if (_index[mid].Offset < offset) lo = mid + 1; else hi = mid - 1;
        }
        return lo < _index.Count && _index[lo].Offset == offset ? lo : null;
    }

    /// <summary>
    /// Writes the frames from <paramref name="offset"/> to the End frame to <paramref name="link"/>, waiting
    /// for frames not produced yet. Throws <see cref="KaDeployException"/> if the spool no longer holds them.
    /// </summary>
    public async Task ServeAsync(Stream link, long offset, CancellationToken cancellationToken)
    {
        int index;
        lock (_gate) index = FindLocked(offset) ?? -1;
        byte[] buffer = new byte[RelayRing.SlotSize];
        while (true)
        {
            Task grown;
            (long Offset, long Position, int Length, DataFrameType Type) entry = default;
            byte[]? held = null;
            lock (_gate)
            {
                if (index < 0)
                {
                    if (CannotServe(offset) is { } why) throw new KaDeployException(why);
                    index = FindLocked(offset) ?? -1;
                }
                if (index >= 0 && index < _firstHeld) throw new KaDeployException($"offset {_index[index].Offset} left the memory spool before it was sent");
                if (index >= 0 && index < _index.Count)
                {
                    entry = _index[index];
                    if (_file is null) held = _memory[index];
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
            ReadOnlyMemory<byte> bytes;
            if (held is not null) bytes = held;
            else
            {
                int got = await RandomAccess.ReadAsync(_file!, buffer.AsMemory(0, entry.Length), entry.Position, cancellationToken).ConfigureAwait(false);
                if (got != entry.Length) throw new KaDeployException($"spool file short read at {entry.Position}");
                bytes = buffer.AsMemory(0, entry.Length);
            }
            await link.WriteAsync(bytes, cancellationToken).ConfigureAwait(false);
            index++;
            if (entry.Type == DataFrameType.End)
            {
                await link.FlushAsync(cancellationToken).ConfigureAwait(false);
                return;
            }
        }
    }

    /// <inheritdoc/>
    public void Dispose() => _file?.Dispose();
}
