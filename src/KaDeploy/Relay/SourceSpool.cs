using System.Buffers.Binary;
using KaDeploy.IO;
using KaDeploy.Payloads.Block;
using KaDeploy.Protocol;
using KaDeploy.Security;
using Microsoft.Win32.SafeHandles;

namespace KaDeploy.Relay;

/// <summary>How the wire stream of a re-readable source is made of its file (<see cref="StreamSpool.FromSource"/>).</summary>
public enum SourceLayout
{
    /// <summary>The stream is the file's bytes from its start, as they are (an uncompressed tar image).</summary>
    Plain,
    /// <summary>
    /// The stream is a block map (<c>Payloads/Block/BlockMapFormat</c>) whose DATA records hold the file's bytes at the
    /// offsets they name (a raw image or a block device); which blocks were left out is read from the stream as it is
    /// produced, not decided again.
    /// </summary>
    BlockMap,
}

/// <summary>Sees every frame the server's producer seals, before it is published (<see cref="RingWriterStream.Observer"/>).</summary>
public interface ISealedFrameObserver
{
    /// <summary>
    /// One frame: <paramref name="frame"/> its wire bytes (header, payload, a sealed frame's tag), <paramref name="plaintext"/>
    /// the stream bytes it carries (the End frame's: its payload). Runs on the producer's thread: must be quick.
    /// </summary>
    void Sealed(DataFrameHeader header, ReadOnlySpan<byte> frame, ReadOnlySpan<byte> plaintext);
}

/// <summary>A spool could not send the frames it was asked for because its source no longer gives them (the node cannot be served).</summary>
public sealed class SourceChangedException(string message) : KaDeployException(message);

public sealed partial class StreamSpool
{
    /// <summary>
    /// The spool of a source the server can read again (issue 10): an uncompressed image in a regular file, or a block
    /// device. Nothing of the stream is kept but an index, fed by the producer (<see cref="Observer"/>): each Data
    /// frame's check (its XxHash3, or a sealed frame's tag), the End frame as sent, and for a block map where each DATA
    /// record lies in the stream and in the file. A resume is served by making the frames again: the payload re-read
    /// with pread, the block map's headers re-made, sealed again in a keyed session (the nonce is the stream id and the
    /// offset: a frame sealed again is the same ciphertext). Every frame made again is compared with its recorded check
    /// before it is sent: a source changed since is refused (<see cref="SourceChangedException"/>), never sent under the
    /// old digest. Make the server's ring with no retention: the spool holds the whole stream at no cost per byte.
    /// </summary>
    /// <param name="path">The file or device the source reads; opened now, and kept open (a file replaced under its name
    /// is still read where the stream came from).</param>
    /// <param name="layout">How the stream is made of the file.</param>
    /// <param name="cipher">A keyed session: a new sealing cipher of the session's stream, one per resume served; null for clear frames.</param>
    public static StreamSpool FromSource(string path, SourceLayout layout, Func<StreamCipher>? cipher)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return new StreamSpool(new SourceSpool(path, layout, cipher));
    }

    /// <summary>What the producer feeds as it seals each frame (a source spool), else null.</summary>
    public ISealedFrameObserver? Observer => _spool as ISealedFrameObserver;

    private sealed class SourceSpool : Spool, ISealedFrameObserver
    {
        // Full frames made again and written at once (a repair's link gets runs of frames, not one write per frame).
        private const int BatchFrames = 16;

        private readonly object _gate = new();
        private readonly string _path;
        private readonly SafeFileHandle _file;
        private readonly Func<StreamCipher>? _cipher;
        private readonly BlockMapIndex? _map;
        private byte[] _checks = new byte[16 << 10];
        private int _checkSize;       // 8 (XxHash3) or the tag's size; set by the first frame
        private int _chunk;           // stream bytes of every Data frame but the last
        private long _frames;
        private int _lastLength;
        private long _nextOffset;
        private byte[]? _end;         // the End frame as sent
        private string? _failure;
        private TaskCompletionSource? _grown;

        public SourceSpool(string path, SourceLayout layout, Func<StreamCipher>? cipher)
            : base($"re-read from {path} (an index of the frames in memory, no copy)")
        {
            _path = path;
            _cipher = cipher;
            _map = layout == SourceLayout.BlockMap ? new BlockMapIndex() : null;
            try
            {
                _file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new KaDeployException($"spool: cannot open {path}: {e.Message}", e);
            }
        }

        public override bool NeedsFeed => false;

        public void Sealed(DataFrameHeader header, ReadOnlySpan<byte> frame, ReadOnlySpan<byte> plaintext)
        {
            TaskCompletionSource? grown;
            lock (_gate)
            {
                if (_failure is null) Index(header, frame, plaintext);
                grown = _grown;
                _grown = null;
            }
            grown?.TrySetResult();
        }

        private void Index(DataFrameHeader header, ReadOnlySpan<byte> frame, ReadOnlySpan<byte> plaintext)
        {
            if (header.Type == DataFrameType.End)
            {
                _end = frame.ToArray();
                return;
            }
            if (header.Type != DataFrameType.Data || _end is not null || header.Offset != _nextOffset || (_frames > 0 && _lastLength != _chunk))
            {
                _failure = $"spool: frame at offset {header.Offset} out of place (the stream stood at {_nextOffset})";
                return;
            }
            if (_frames == 0)
            {
                _chunk = header.PlaintextLength;
                _checkSize = header.IsSealed ? header.TagLength : sizeof(ulong);
            }
            else if (header.PlaintextLength > _chunk)
            {
                _failure = $"spool: frame at offset {header.Offset} is longer than the first";
                return;
            }
            if (_map is not null && _map.Feed(plaintext, header.Offset) is { } bad)
            {
                _failure = "spool: " + bad;
                return;
            }
            long at = _frames * _checkSize;
            if (at + _checkSize > Array.MaxLength)
            {
                _failure = $"spool: the index is full at offset {header.Offset} (use --spool DIR for a stream this long)";
                return;
            }
            if (at + _checkSize > _checks.Length) Array.Resize(ref _checks, (int)Math.Min(Array.MaxLength, _checks.Length * 2L));
            var check = _checks.AsSpan((int)at, _checkSize);
            if (header.IsSealed) frame.Slice(DataFrameHeader.Size + header.PlaintextLength, _checkSize).CopyTo(check);
            else BinaryPrimitives.WriteUInt64LittleEndian(check, header.Checksum);
            _frames++;
            _lastLength = header.PlaintextLength;
            _nextOffset += header.PlaintextLength;
        }

        public override string? CannotServe(long offset)
        {
            lock (_gate) return CannotServeLocked(offset);
        }

        private string? CannotServeLocked(long offset)
        {
            if (_failure is not null) return _failure;
            if (offset < 0) return $"offset {offset} is not in the stream";
            if (offset > _nextOffset)
                return $"offset {offset} is not in the stream (it {(_end is null ? "stands" : "ended")} at {_nextOffset})";
            return offset == _nextOffset || offset % _chunk == 0 ? null : $"offset {offset} is not a frame boundary of the stream";
        }

        public override async Task ServeAsync(Stream link, long offset, CancellationToken cancellationToken)
        {
            if (CannotServe(offset) is { } why) throw new KaDeployException(why);
            using var cipher = _cipher?.Invoke();
            byte[] batch = new byte[BatchFrames * RelayRing.SlotSize];
            byte[]? plain = cipher is null ? null : new byte[ProtocolConstants.MaxChunkPayload];
            long k = -1; // the next frame to send
            while (true)
            {
                Task? grown = null;
                long frames;
                int chunk, filled = 0;
                byte[]? end;
                lock (_gate)
                {
                    if (_failure is not null) throw new KaDeployException(_failure);
                    // The offset is a frame boundary, or where the stream stands (all of it sent: the End frame alone).
                    if (k < 0) k = offset == _nextOffset ? _frames : offset / _chunk;
                    chunk = _chunk;
                    frames = Math.Min(_frames - k, BatchFrames);
                    end = frames <= 0 ? _end : null;
                    if (frames <= 0 && end is null) grown = (_grown ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
                }
                if (grown is not null)
                {
                    await grown.WaitAsync(cancellationToken).ConfigureAwait(false);
                    continue;
                }
                if (end is not null)
                {
                    await link.WriteAsync(end, cancellationToken).ConfigureAwait(false);
                    await link.FlushAsync(cancellationToken).ConfigureAwait(false);
                    return;
                }
                for (long last = k + frames; k < last; k++)
                    filled += Rebuild(k * chunk, FrameLength(k), k, batch.AsSpan(filled), plain, cipher);
                await link.WriteAsync(batch.AsMemory(0, filled), cancellationToken).ConfigureAwait(false);
            }
        }

        private int FrameLength(long k)
        {
            lock (_gate) return k == _frames - 1 ? _lastLength : _chunk;
        }

        // Frame k made again into `into` (header, payload, tag); its check compared with the one sent. Returns its wire length.
        private int Rebuild(long offset, int length, long k, Span<byte> into, byte[]? plain, StreamCipher? cipher)
        {
            Span<byte> check = stackalloc byte[DataFrameHeader.AegisTagSize];
            int checkSize;
            lock (_gate)
            {
                checkSize = _checkSize;
                _checks.AsSpan((int)(k * checkSize), checkSize).CopyTo(check);
            }
            check = check[..checkSize];
            if (cipher is null)
            {
                var payload = into.Slice(DataFrameHeader.Size, length);
                Read(offset, payload);
                var header = new DataFrameHeader(DataFrameType.Data, length, offset, DataFrameHeader.ComputeChecksum(payload, offset));
                if (header.Checksum != BinaryPrimitives.ReadUInt64LittleEndian(check)) throw Changed(offset);
                header.Write(into);
                return DataFrameHeader.Size + length;
            }
            var text = plain.AsSpan(0, length);
            Read(offset, text);
            var sealedHeader = cipher.Seal(DataFrameType.Data, offset, text, into);
            if (!into.Slice(DataFrameHeader.Size + length, checkSize).SequenceEqual(check)) throw Changed(offset);
            return DataFrameHeader.Size + sealedHeader.PayloadLength;
        }

        private SourceChangedException Changed(long offset) =>
            new($"the source changed since it was sent: {_path} no longer gives the frame at offset {offset}");

        // The stream's bytes [offset, offset + into.Length), from the file (and, for a block map, its index).
        private void Read(long offset, Span<byte> into)
        {
            while (!into.IsEmpty)
            {
                int n;
                if (_map is null) n = ReadFile(offset, into);
                else
                {
                    BlockMapIndex.Piece piece;
                    lock (_gate) piece = _map.Find(offset, into.Length);
                    n = piece.Length;
                    if (piece.FileOffset >= 0) ReadFile(piece.FileOffset, into[..n]);
                    else piece.Literal.AsSpan(piece.LiteralStart, n).CopyTo(into);
                }
                offset += n;
                into = into[n..];
            }
        }

        private int ReadFile(long fileOffset, Span<byte> into)
        {
            int n;
            try
            {
                n = PositionalRead.Full(_file, into, fileOffset);
            }
            catch (IOException e)
            {
                throw new SourceChangedException($"the source cannot be read again: {_path} at {fileOffset}: {e.Message}");
            }
            if (n < into.Length) throw new SourceChangedException($"the source changed since it was sent: {_path} ends at {fileOffset + n} now");
            return n;
        }

        public override void Dispose() => _file.Dispose();
    }

    /// <summary>
    /// Where each byte of a block map stream came from, read off the stream as it is produced: the 24-byte header and
    /// the END record as they were, and per DATA record its place in the stream, its offset in the image and its
    /// length (its 13-byte header is made again from those). About 24 bytes per record (a record is 1 MiB of a dense
    /// image, one run of non-zero blocks of a sparse one).
    /// </summary>
    private sealed class BlockMapIndex
    {
        private const int HeaderLength = BlockMapFormat.HeaderLength, RecordHeaderLength = BlockMapFormat.DataRecordHeaderLength,
            EndLength = BlockMapFormat.EndRecordLength;
        private const byte DataType = BlockMapFormat.DataRecordType, EndType = BlockMapFormat.EndRecordType;

        private readonly List<(long StreamPos, long ImageOffset, int Length)> _records = [];
        private readonly byte[] _header = new byte[HeaderLength];
        private readonly byte[] _endRecord = new byte[EndLength];
        private readonly byte[] _pending = new byte[EndLength]; // a record header gathered across frames
        private int _pendingFilled;
        private long _skip;       // DATA bytes still to pass over
        private long _endPos = -1; // where the END record starts
        private long _position;   // stream bytes fed so far

        /// <summary>A run of stream bytes from one place: the file (FileOffset &gt;= 0) or literal bytes.</summary>
        public readonly record struct Piece(int Length, long FileOffset, byte[] Literal, int LiteralStart);

        /// <summary>Takes the next stream bytes (at <paramref name="at"/>); returns why the stream is no block map, else null.</summary>
        public string? Feed(ReadOnlySpan<byte> bytes, long at)
        {
            if (at != _position) return $"block map index at {_position}, fed {at}";
            while (!bytes.IsEmpty)
            {
                if (_skip > 0)
                {
                    int k = (int)Math.Min(_skip, bytes.Length);
                    _skip -= k;
                    Advance(ref bytes, k);
                    continue;
                }
                if (_endPos >= 0) return "the block map goes on after its END record";
                if (_position < HeaderLength)
                {
                    int k = (int)Math.Min(HeaderLength - _position, bytes.Length);
                    bytes[..k].CopyTo(_header.AsSpan((int)_position));
                    Advance(ref bytes, k);
                    continue;
                }
                // A record: its type says how long its header is.
                int need = _pendingFilled == 0 ? 1 : _pending[0] == DataType ? RecordHeaderLength : _pending[0] == EndType ? EndLength : 0;
                if (need == 0) return $"block map record of type 0x{_pending[0]:x2} at {_position - _pendingFilled}";
                int take = Math.Min(need - _pendingFilled, bytes.Length);
                bytes[..take].CopyTo(_pending.AsSpan(_pendingFilled));
                _pendingFilled += take;
                Advance(ref bytes, take);
                if (_pendingFilled == 1 || _pendingFilled < need) continue;
                long start = _position - _pendingFilled;
                _pendingFilled = 0;
                if (_pending[0] == EndType)
                {
                    _pending.AsSpan(0, EndLength).CopyTo(_endRecord);
                    _endPos = start;
                    continue;
                }
                long imageOffset = BinaryPrimitives.ReadInt64LittleEndian(_pending.AsSpan(1));
                int length = BinaryPrimitives.ReadInt32LittleEndian(_pending.AsSpan(9));
                if (imageOffset < 0 || length <= 0) return $"block map record at {start} names offset {imageOffset}, length {length}";
                _records.Add((start, imageOffset, length));
                _skip = length;
            }
            return null;
        }

        private void Advance(ref ReadOnlySpan<byte> bytes, int k)
        {
            bytes = bytes[k..];
            _position += k;
        }

        /// <summary>Where the stream bytes from <paramref name="at"/> come from (at most <paramref name="most"/>); the bytes were fed.</summary>
        public Piece Find(long at, int most)
        {
            if (at < HeaderLength) return new Piece((int)Math.Min(HeaderLength - at, most), -1, _header, (int)at);
            if (_endPos >= 0 && at >= _endPos)
                return new Piece((int)Math.Min(EndLength - (at - _endPos), most), -1, _endRecord, (int)(at - _endPos));
            if (_records.Count == 0 || at < _records[0].StreamPos) throw new InvalidOperationException($"block map byte {at} was not indexed");
            int lo = 0, hi = _records.Count - 1;
            while (lo < hi)
            {
                int mid = (lo + hi + 1) / 2;
                if (_records[mid].StreamPos <= at) lo = mid; else hi = mid - 1;
            }
            var (pos, image, length) = _records[lo];
            long into = at - pos;
            if (into < RecordHeaderLength)
            {
                var h = new byte[RecordHeaderLength];
                BlockMapFormat.WriteDataRecordHeader(h, image, length);
                return new Piece((int)Math.Min(RecordHeaderLength - into, most), -1, h, (int)into);
            }
            into -= RecordHeaderLength;
            return new Piece((int)Math.Min(length - into, most), image + into, [], 0);
        }
    }
}
