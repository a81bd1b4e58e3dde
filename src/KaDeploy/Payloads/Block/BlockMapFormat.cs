using System.Buffers.Binary;
using System.Diagnostics;

namespace KaDeploy.Payloads.Block;

/// <summary>
/// The block map: a streaming encoding of a raw disk or partition image that leaves out all-zero blocks.
/// </summary>
/// <remarks>
/// <para>All integers are little-endian. The stream is a header, any number of DATA records, and one END record:</para>
/// <code>
/// header  (24 bytes)  "KDBLKMAP" | version u16 (=1) | reserved u16 (=0) | block size u32 | total length u64
/// DATA    (13 + n)    'D' | offset u64 | length u32 (= n) | n bytes of the image at [offset, offset + n)
/// END     (17 bytes)  'E' | total length u64 (= header's) | data bytes u64 (sum of all DATA lengths)
/// </code>
/// <para>
/// Every byte of [0, total) that no DATA record covers is zero. The block size is a power of two in
/// [<see cref="MinBlockSize"/>, <see cref="MaxBlockSize"/>]. DATA records come in increasing offset order and never
/// overlap (a record may start exactly where the previous one ended); each starts on a block boundary and ends on
/// one or at the total length; a record's length is 1 to <see cref="MaxRecordLength"/> bytes. A decoder checks all
/// of this before it writes anything, so a hostile stream can never make a sink write outside [0, total) nor make
/// it allocate more than its own fixed buffers. Bytes after END are not part of the block map.
/// </para>
/// </remarks>
public static class BlockMapFormat
{
    /// <summary>The 8 bytes every block map starts with.</summary>
    public static ReadOnlySpan<byte> Magic => "KDBLKMAP"u8;

    /// <summary>The only version this code reads and writes.</summary>
    public const ushort Version = 1;

    /// <summary>Length of the header in bytes.</summary>
    public const int HeaderLength = 24;

    /// <summary>Length of a DATA record's fixed part (type, offset, length) in bytes.</summary>
    public const int DataRecordHeaderLength = 13;

    /// <summary>Length of the END record in bytes.</summary>
    public const int EndRecordLength = 17;

    /// <summary>Type byte of a DATA record.</summary>
    public const byte DataRecordType = (byte)'D';

    /// <summary>Type byte of the END record.</summary>
    public const byte EndRecordType = (byte)'E';

    /// <summary>The block size a source uses unless told otherwise: 64 KiB.</summary>
    public const int DefaultBlockSize = 64 * 1024;

    /// <summary>Smallest block size allowed (one sector).</summary>
    public const int MinBlockSize = 512;

    /// <summary>Largest block size allowed.</summary>
    public const int MaxBlockSize = 16 * 1024 * 1024;

    /// <summary>Largest data length of one DATA record; a decoder refuses longer ones.</summary>
    public const int MaxRecordLength = 16 * 1024 * 1024;

    /// <summary>A DATA record's header (<see cref="DataRecordHeaderLength"/> bytes): its type, the image offset, the length.</summary>
    public static void WriteDataRecordHeader(Span<byte> into, long offset, int length)
    {
        into[0] = DataRecordType;
        BinaryPrimitives.WriteUInt64LittleEndian(into[1..], (ulong)offset);
        BinaryPrimitives.WriteUInt32LittleEndian(into[9..], (uint)length);
    }

    /// <summary>True when <paramref name="blockSize"/> is a power of two within the allowed range.</summary>
    public static bool IsValidBlockSize(int blockSize) =>
        blockSize >= MinBlockSize && blockSize <= MaxBlockSize && (blockSize & (blockSize - 1)) == 0;
}

/// <summary>What a block map's header says.</summary>
/// <param name="BlockSize">Granularity of zero detection; every DATA record starts on a multiple of it.</param>
/// <param name="TotalLength">Length of the image in bytes; the target must hold at least this many.</param>
public readonly record struct BlockMapHeader(int BlockSize, long TotalLength);

/// <summary>One DATA record: <paramref name="Length"/> bytes of the image at <paramref name="Offset"/>.</summary>
public readonly record struct BlockMapRun(long Offset, int Length)
{
    /// <summary>First offset after the run.</summary>
    public long End => Offset + Length;
}

/// <summary>Writes a block map to a stream, checking that the caller keeps the format's rules.</summary>
public sealed class BlockMapWriter
{
    private readonly Stream _output;
    private readonly byte[] _scratch = new byte[BlockMapFormat.HeaderLength];
    private long _position;
    private bool _headerWritten;
    private bool _ended;

    /// <summary>Creates a writer for an image of <paramref name="totalLength"/> bytes.</summary>
    public BlockMapWriter(Stream output, long totalLength, int blockSize = BlockMapFormat.DefaultBlockSize)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentOutOfRangeException.ThrowIfNegative(totalLength);
        if (!BlockMapFormat.IsValidBlockSize(blockSize))
            throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "block size must be a power of two from 512 B to 16 MiB");
        _output = output;
        TotalLength = totalLength;
        BlockSize = blockSize;
    }

    /// <summary>Length of the image in bytes.</summary>
    public long TotalLength { get; }

    /// <summary>Block size written in the header.</summary>
    public int BlockSize { get; }

    /// <summary>Sum of the data lengths written so far.</summary>
    public long DataBytes { get; private set; }

    /// <summary>Number of DATA records written so far.</summary>
    public long RecordCount { get; private set; }

    /// <summary>Writes the header; call once, first.</summary>
    public async ValueTask WriteHeaderAsync(CancellationToken cancellationToken)
    {
        if (_headerWritten) throw new InvalidOperationException("header already written");
        _headerWritten = true;
        Span<byte> h = _scratch;
        BlockMapFormat.Magic.CopyTo(h);
        BinaryPrimitives.WriteUInt16LittleEndian(h[8..], BlockMapFormat.Version);
        BinaryPrimitives.WriteUInt16LittleEndian(h[10..], 0);
        BinaryPrimitives.WriteUInt32LittleEndian(h[12..], (uint)BlockSize);
        BinaryPrimitives.WriteUInt64LittleEndian(h[16..], (ulong)TotalLength);
        await _output.WriteAsync(_scratch.AsMemory(0, BlockMapFormat.HeaderLength), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Writes <paramref name="data"/> as the image's bytes at <paramref name="offset"/>, split into records of at most
    /// <see cref="BlockMapFormat.MaxRecordLength"/>. Offsets must increase; the run must start on a block boundary
    /// and end on one or at the total length.
    /// </summary>
    public async ValueTask WriteRunAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (data.IsEmpty) return;
        long end = CheckRun(offset, data.Length);
        while (!data.IsEmpty)
        {
            int n = Math.Min(data.Length, BlockMapFormat.MaxRecordLength);
            await WriteRecordHeaderAsync(offset, n, cancellationToken).ConfigureAwait(false);
            await _output.WriteAsync(data[..n], cancellationToken).ConfigureAwait(false);
            offset += n;
            data = data[n..];
        }
        _position = end;
    }

    /// <summary>
    /// Writes the DATA record header of <paramref name="length"/> bytes at <paramref name="offset"/> (at most
    /// <see cref="BlockMapFormat.MaxRecordLength"/>, the rules of <see cref="WriteRunAsync"/>); the caller then writes
    /// exactly those bytes to the stream itself (a source that reads them straight into memory the stream lends).
    /// </summary>
    public async ValueTask BeginRecordAsync(long offset, int length, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(length, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, BlockMapFormat.MaxRecordLength);
        long end = CheckRun(offset, length);
        await WriteRecordHeaderAsync(offset, length, cancellationToken).ConfigureAwait(false);
        _position = end;
    }

    // A run's place: after the last one, inside the image, on block boundaries; returns its end.
    private long CheckRun(long offset, int length)
    {
        if (!_headerWritten || _ended) throw new InvalidOperationException("a run must come after the header and before the end");
        if (offset < _position || offset > TotalLength - length)
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"run of {length} bytes at {offset} is before the last run's end {_position} or past the total {TotalLength}");
        long end = offset + length;
        if (offset % BlockSize != 0 || (end % BlockSize != 0 && end != TotalLength))
            throw new ArgumentOutOfRangeException(nameof(offset), offset, "run is not aligned to the block size");
        return end;
    }

    private ValueTask WriteRecordHeaderAsync(long offset, int length, CancellationToken cancellationToken)
    {
        BlockMapFormat.WriteDataRecordHeader(_scratch, offset, length);
        DataBytes += length;
        RecordCount++;
        return _output.WriteAsync(_scratch.AsMemory(0, BlockMapFormat.DataRecordHeaderLength), cancellationToken);
    }

    /// <summary>Writes the END record; call once, last.</summary>
    public async ValueTask WriteEndAsync(CancellationToken cancellationToken)
    {
        if (!_headerWritten || _ended) throw new InvalidOperationException("end must come once, after the header");
        _ended = true;
        Span<byte> h = _scratch;
        h[0] = BlockMapFormat.EndRecordType;
        BinaryPrimitives.WriteUInt64LittleEndian(h[1..], (ulong)TotalLength);
        BinaryPrimitives.WriteUInt64LittleEndian(h[9..], (ulong)DataBytes);
        await _output.WriteAsync(_scratch.AsMemory(0, BlockMapFormat.EndRecordLength), cancellationToken).ConfigureAwait(false);
    }
}

/// <summary>
/// Reads a block map from a stream and validates every field before handing it out; any violation throws
/// <see cref="KaDeployException"/> with a one-line reason.
/// </summary>
/// <remarks>
/// When the stream lends its bytes (<see cref="IO.ISegmentReader"/>, e.g. a relayed ring), the reader parses the
/// records from the lent segments themselves and can hand out run data as lent slices
/// (<see cref="ReadRunSegmentAsync"/>): no copy of ours between the ring slot and the target. A record header cut
/// between two segments is gathered in a few bytes of its own; what a segment holds after the end of a run (the next
/// record's header, the start of its data) is kept for the next call. Either way the reader takes no byte after the
/// END record for a record; bytes that follow it in the same lent segment are left alone, as the stream reader
/// leaves them unread in the stream.
/// </remarks>
public sealed class BlockMapReader
{
    private readonly Stream _input;
    private readonly IO.ISegmentReader? _lender;
    private readonly byte[] _scratch = new byte[BlockMapFormat.HeaderLength];
    private ReadOnlyMemory<byte> _held; // lent by _lender and not yet taken: valid until our next read of it
    private BlockMapHeader? _header;
    private long _position;          // end of the last run: the next run may not start before it
    private long _dataBytes;
    private int _runRemaining;
    private bool _ended;

    /// <summary>Creates a reader over <paramref name="input"/>; it reads no further than the END record.</summary>
    public BlockMapReader(Stream input)
    {
        ArgumentNullException.ThrowIfNull(input);
        _input = input;
        _lender = input as IO.ISegmentReader;
    }

    /// <summary>The header, once <see cref="ReadHeaderAsync"/> has returned.</summary>
    public BlockMapHeader Header => _header ?? throw new InvalidOperationException("header not read yet");

    /// <summary>Bytes of the current run not yet read with <see cref="ReadRunDataAsync"/> or <see cref="ReadRunSegmentAsync"/>.</summary>
    public int RunRemaining => _runRemaining;

    /// <summary>Sum of the data lengths of the runs read so far.</summary>
    public long DataBytes => _dataBytes;

    /// <summary>True when the input lends its bytes, so that <see cref="ReadRunSegmentAsync"/> can be used.</summary>
    public bool LendsRunData => _lender is not null;

    /// <summary>Reads and checks the header.</summary>
    public async ValueTask<BlockMapHeader> ReadHeaderAsync(CancellationToken cancellationToken)
    {
        if (_header is not null) throw new InvalidOperationException("header already read");
        await FillAsync(BlockMapFormat.HeaderLength, "header", cancellationToken).ConfigureAwait(false);
        ReadOnlySpan<byte> h = _scratch;
        if (!h[..8].SequenceEqual(BlockMapFormat.Magic))
            throw new KaDeployException("block map: bad magic (the stream is not a ka-deploy block map)");
        ushort version = BinaryPrimitives.ReadUInt16LittleEndian(h[8..]);
        if (version != BlockMapFormat.Version)
            throw new KaDeployException($"block map: version {version} is not supported (this build reads version {BlockMapFormat.Version})");
        if (BinaryPrimitives.ReadUInt16LittleEndian(h[10..]) != 0)
            throw new KaDeployException("block map: reserved header field is not zero");
        uint blockSize = BinaryPrimitives.ReadUInt32LittleEndian(h[12..]);
        if (blockSize > int.MaxValue || !BlockMapFormat.IsValidBlockSize((int)blockSize))
            throw new KaDeployException($"block map: block size {blockSize} is not a power of two from 512 B to 16 MiB");
        ulong total = BinaryPrimitives.ReadUInt64LittleEndian(h[16..]);
        if (total > long.MaxValue)
            throw new KaDeployException($"block map: total length {total} is out of range");
        var header = new BlockMapHeader((int)blockSize, (long)total);
        _header = header;
        return header;
    }

    /// <summary>
    /// Reads the next record. Returns the run whose bytes follow (read them with <see cref="ReadRunDataAsync"/> or
    /// <see cref="ReadRunSegmentAsync"/> before the next call), or null once a valid END record has been read.
    /// </summary>
    public async ValueTask<BlockMapRun?> ReadNextRunAsync(CancellationToken cancellationToken)
    {
        BlockMapHeader header = Header;
        if (_ended) return null;
        if (_runRemaining != 0) throw new InvalidOperationException("the previous run's data was not read");

        await FillAsync(1, "record", cancellationToken).ConfigureAwait(false);
        byte type = _scratch[0];
        if (type == BlockMapFormat.DataRecordType)
        {
            await FillAsync(BlockMapFormat.DataRecordHeaderLength - 1, "record", cancellationToken).ConfigureAwait(false);
            ulong offset = BinaryPrimitives.ReadUInt64LittleEndian(_scratch);
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(_scratch.AsSpan(8));
            if (length == 0 || length > BlockMapFormat.MaxRecordLength)
                throw new KaDeployException($"block map: record at offset {offset} has length {length} (allowed 1 to {BlockMapFormat.MaxRecordLength})");
            if (offset > (ulong)header.TotalLength || length > (ulong)header.TotalLength - offset)
                throw new KaDeployException($"block map: record [{offset}, {offset + length}) lies beyond the image's end {header.TotalLength}");
            if ((long)offset < _position)
                throw new KaDeployException($"block map: record at offset {offset} overlaps or precedes the previous record ending at {_position}");
            long end = (long)offset + length;
            if ((long)offset % header.BlockSize != 0 || (end % header.BlockSize != 0 && end != header.TotalLength))
                throw new KaDeployException($"block map: record [{offset}, {end}) is not aligned to the block size {header.BlockSize}");
            _position = end;
            _dataBytes += length;
            _runRemaining = (int)length;
            return new BlockMapRun((long)offset, (int)length);
        }
        if (type == BlockMapFormat.EndRecordType)
        {
            await FillAsync(BlockMapFormat.EndRecordLength - 1, "end record", cancellationToken).ConfigureAwait(false);
            ulong total = BinaryPrimitives.ReadUInt64LittleEndian(_scratch);
            ulong data = BinaryPrimitives.ReadUInt64LittleEndian(_scratch.AsSpan(8));
            if (total != (ulong)header.TotalLength)
                throw new KaDeployException($"block map: end record says total {total}, header said {header.TotalLength}");
            if (data != (ulong)_dataBytes)
                throw new KaDeployException($"block map: end record counts {data} data bytes, the stream carried {_dataBytes}");
            _ended = true;
            return null;
        }
        throw new KaDeployException($"block map: unknown record type 0x{type:X2} after offset {_position}");
    }

    /// <summary>
    /// Reads exactly <paramref name="destination"/>.Length bytes of the current run, which must not exceed
    /// <see cref="RunRemaining"/>.
    /// </summary>
    public async ValueTask ReadRunDataAsync(Memory<byte> destination, CancellationToken cancellationToken)
    {
        if (destination.Length > _runRemaining)
            throw new ArgumentOutOfRangeException(nameof(destination), destination.Length, "more than the run has left");
        if (_lender is not null)
        {
            // A block device's sink copies into buffers of its own (aligned, overlapped writes): copy out of the loans.
            while (!destination.IsEmpty)
            {
                if (_held.IsEmpty) await NextSegmentInRunAsync(cancellationToken).ConfigureAwait(false);
                int n = Math.Min(_held.Length, destination.Length);
                _held.Span[..n].CopyTo(destination.Span);
                _held = _held[n..];
                destination = destination[n..];
                _runRemaining -= n;
            }
            return;
        }
        try
        {
            await _input.ReadExactlyAsync(destination, cancellationToken).ConfigureAwait(false);
        }
        catch (EndOfStreamException)
        {
            throw new KaDeployException($"block map: stream ends inside the record that ends at {_position}");
        }
        _runRemaining -= destination.Length;
    }

    /// <summary>
    /// The next bytes of the current run, lent from the input: valid only until the next call of any kind on this
    /// reader. Never empty and never more than <see cref="RunRemaining"/>; call while <see cref="RunRemaining"/> is
    /// above zero. Only for an input that lends its bytes (<see cref="LendsRunData"/>).
    /// </summary>
    public ValueTask<ReadOnlyMemory<byte>> ReadRunSegmentAsync(CancellationToken cancellationToken)
    {
        if (_lender is null) throw new InvalidOperationException("the input does not lend its bytes");
        if (_runRemaining == 0) throw new InvalidOperationException("no run data left to read");
        if (!_held.IsEmpty) return new ValueTask<ReadOnlyMemory<byte>>(TakeRunData());
        return NextRunSegmentAsync(cancellationToken);
    }

    private async ValueTask<ReadOnlyMemory<byte>> NextRunSegmentAsync(CancellationToken cancellationToken)
    {
        await NextSegmentInRunAsync(cancellationToken).ConfigureAwait(false);
        return TakeRunData();
    }

    // Ends the loan of the held segment (taken whole) and holds the next one, which must exist: a run is not over.
    private async ValueTask NextSegmentInRunAsync(CancellationToken cancellationToken)
    {
        Debug.Assert(_held.IsEmpty && _runRemaining > 0);
        _held = await _lender!.ReadSegmentAsync(cancellationToken).ConfigureAwait(false);
        if (_held.IsEmpty)
            throw new KaDeployException($"block map: stream ends inside the record that ends at {_position}");
    }

    // What the held segment has of the current run; the rest (the next record) stays held.
    private ReadOnlyMemory<byte> TakeRunData()
    {
        int n = Math.Min(_held.Length, _runRemaining);
        ReadOnlyMemory<byte> piece = _held[..n];
        _held = _held[n..];
        _runRemaining -= n;
        return piece;
    }

    private async ValueTask FillAsync(int count, string what, CancellationToken cancellationToken)
    {
        Debug.Assert(count <= _scratch.Length);
        if (_lender is not null)
        {
            // A record header may be cut between two segments: its first part is copied here before the next
            // segment is asked for (which ends the loan of the previous one).
            int filled = 0;
            while (filled < count)
            {
                if (_held.IsEmpty)
                {
                    _held = await _lender.ReadSegmentAsync(cancellationToken).ConfigureAwait(false);
                    if (_held.IsEmpty)
                        throw new KaDeployException($"block map: stream ends inside the {what} (truncated after offset {_position})");
                }
                int n = Math.Min(count - filled, _held.Length);
                _held.Span[..n].CopyTo(_scratch.AsSpan(filled));
                _held = _held[n..];
                filled += n;
            }
            return;
        }
        try
        {
            await _input.ReadExactlyAsync(_scratch.AsMemory(0, count), cancellationToken).ConfigureAwait(false);
        }
        catch (EndOfStreamException)
        {
            throw new KaDeployException($"block map: stream ends inside the {what} (truncated after offset {_position})");
        }
    }
}
