using System.IO.Hashing;
using System.Security.Cryptography;
using KaDeploy.IO;
using KaDeploy.Protocol;

namespace KaDeploy.Relay;

/// <summary>
/// An incremental end-to-end digest by <see cref="DigestAlgorithm"/>; the result is always
/// <see cref="Size"/> bytes (XXH3-128's 16 bytes are followed by 16 zeros), the End frame's digest field.
/// <see cref="DigestAlgorithm.Frames"/> is not taken over the payload (<see cref="FrameDigest"/> is): for it this
/// digest hashes nothing, and <see cref="Finish"/> refuses, so that no caller can compare an empty hash.
/// </summary>
public sealed class PayloadDigest : IDisposable
{
    /// <summary>Bytes of every digest.</summary>
    public const int Size = 32;

    private readonly IncrementalHash? _sha256;
    private readonly Blake3.Hasher? _blake3;
    private readonly XxHash128? _xxh128;

    /// <summary>A fresh digest of the given kind.</summary>
    public PayloadDigest(DigestAlgorithm algorithm)
    {
        Algorithm = algorithm;
        switch (algorithm)
        {
            case DigestAlgorithm.Sha256: _sha256 = IncrementalHash.CreateHash(HashAlgorithmName.SHA256); break;
            case DigestAlgorithm.Blake3: _blake3 = Blake3.Hasher.New(); break;
            case DigestAlgorithm.XxHash128: _xxh128 = new XxHash128(); break;
            case DigestAlgorithm.Frames: break;
            default: throw new ArgumentOutOfRangeException(nameof(algorithm), algorithm, "unknown digest algorithm");
        }
    }

    /// <summary>The algorithm.</summary>
    public DigestAlgorithm Algorithm { get; }

    /// <summary>Adds <paramref name="data"/>.</summary>
    public void Append(ReadOnlySpan<byte> data)
    {
        if (_xxh128 is not null) _xxh128.Append(data);
        else if (_sha256 is not null) _sha256.AppendData(data);
        else _blake3?.Update(data);
    }

    /// <summary>The digest of everything appended (call once).</summary>
    public byte[] Finish()
    {
        if (Algorithm == DigestAlgorithm.Frames)
            throw new InvalidOperationException("the frames digest is taken over the frames (FrameDigest), not the payload");
        var digest = new byte[Size];
        if (_xxh128 is not null) _xxh128.GetCurrentHash(digest);
        else if (_sha256 is not null) _sha256.GetHashAndReset(digest);
        else _blake3!.Finalize(digest);
        return digest;
    }

    /// <summary>The digest of <paramref name="data"/> at once (tests, small payloads).</summary>
    public static byte[] Of(DigestAlgorithm algorithm, ReadOnlySpan<byte> data)
    {
        using var d = new PayloadDigest(algorithm);
        d.Append(data);
        return d.Finish();
    }

    public void Dispose()
    {
        _sha256?.Dispose();
        _blake3?.Dispose();
    }
}

/// <summary>
/// Pass-through write stream that counts and digests the payload on its way to the wire. Lends the stream
/// below's segments (<see cref="ISegmentWriter"/>) when it can, and digests what the source put there when it is
/// committed, right after the source wrote it (still in cache) and before the frame can be sealed and sent.
/// </summary>
public sealed class DigestWriteStream(Stream inner, DigestAlgorithm algorithm = DigestAlgorithm.Sha256) : SequentialWriteStream, ISegmentWriter
{
    private readonly PayloadDigest _hash = new(algorithm);
    private readonly ISegmentWriter? _lender = inner is ISegmentWriter { LendsSegments: true } w ? w : null;
    private Memory<byte> _lent;

    private long _count;

    /// <inheritdoc />
    public bool LendsSegments => _lender is not null;

    /// <inheritdoc />
    public async ValueTask<Memory<byte>> GetSegmentAsync(CancellationToken cancellationToken)
    {
        if (_lender is null) throw new NotSupportedException("the stream below lends no segments");
        _lent = await _lender.GetSegmentAsync(cancellationToken).ConfigureAwait(false);
        return _lent;
    }

    /// <inheritdoc />
    public void Advance(int count)
    {
        if (_lender is null) throw new NotSupportedException("the stream below lends no segments");
        if ((uint)count > (uint)_lent.Length) throw new ArgumentOutOfRangeException(nameof(count));
        _hash.Append(_lent.Span[..count]);
        Volatile.Write(ref _count, _count + count);
        _lent = default;
        _lender.Advance(count);
    }

    /// <summary>Payload bytes written so far (safe to read from another thread for progress).</summary>
    public long Length64 => Volatile.Read(ref _count);

    /// <summary>The digest of everything written (call once, at the end).</summary>
    public byte[] Digest() => _hash.Finish();

    /// <summary>The digest's algorithm.</summary>
    public DigestAlgorithm Algorithm => _hash.Algorithm;

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        _lent = default;
        _hash.Append(buffer);
        Volatile.Write(ref _count, _count + buffer.Length);
        inner.Write(buffer);
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        _lent = default;
        _hash.Append(buffer.Span);
        Volatile.Write(ref _count, _count + buffer.Length);
        return inner.WriteAsync(buffer, cancellationToken);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Flush() => inner.Flush();
    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
    public override long Length => Length64;
    public override long Position { get => Length64; set => throw new NotSupportedException(); }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _hash.Dispose();
        base.Dispose(disposing);
    }
}

/// <summary>
/// Pass-through read stream that counts and digests what the sink consumes. Lends segments
/// (<see cref="ISegmentReader"/>) without a copy when the stream below can, from a buffer of its own otherwise.
/// </summary>
public sealed class DigestReadStream(Stream inner, DigestAlgorithm algorithm = DigestAlgorithm.Sha256) : SequentialReadStream, ISegmentReader
{
    private const int SegmentBufferSize = 1 << 20;
    private readonly PayloadDigest _hash = new(algorithm);
    private byte[]? _segmentBuffer;
    private long _count;

    /// <summary>Payload bytes read so far (safe to read from another thread for progress).</summary>
    public long BytesRead => Volatile.Read(ref _count);

    /// <summary>The digest of everything read (call once, at the end).</summary>
    public byte[] Digest() => _hash.Finish();

    /// <summary>The digest's algorithm.</summary>
    public DigestAlgorithm Algorithm => _hash.Algorithm;

    /// <summary>Reads and hashes whatever the sink left unread (tar padding after its end marker, ...).</summary>
    public async Task DrainAsync(CancellationToken cancellationToken)
    {
        var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            while (await ReadAsync(buffer, cancellationToken).ConfigureAwait(false) > 0) { }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    public override int Read(Span<byte> buffer)
    {
        int n = inner.Read(buffer);
        Account(buffer[..n]);
        return n;
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        int n = await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        Account(buffer.Span[..n]);
        return n;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    /// <inheritdoc />
    public async ValueTask<ReadOnlyMemory<byte>> ReadSegmentAsync(CancellationToken cancellationToken)
    {
        ReadOnlyMemory<byte> segment;
        if (inner is ISegmentReader lender)
        {
            segment = await lender.ReadSegmentAsync(cancellationToken).ConfigureAwait(false);
        }
        else
        {
            _segmentBuffer ??= System.Buffers.ArrayPool<byte>.Shared.Rent(SegmentBufferSize);
            int n = await inner.ReadAsync(_segmentBuffer, cancellationToken).ConfigureAwait(false);
            segment = _segmentBuffer.AsMemory(0, n);
        }
        Account(segment.Span);
        return segment;
    }

    /// <inheritdoc />
    public bool CanHoldSegments => inner is ISegmentReader { CanHoldSegments: true };

    /// <inheritdoc />
    public int ReadHeldSegments(Span<ReadOnlyMemory<byte>> segments, CancellationToken cancellationToken)
    {
        int n = ((ISegmentReader)inner).ReadHeldSegments(segments, cancellationToken);
        foreach (var segment in segments[..Math.Max(n, 0)]) Account(segment.Span);
        return n;
    }

    /// <inheritdoc />
    public void ReleaseHeld(long bytes) => ((ISegmentReader)inner).ReleaseHeld(bytes);

    private void Account(ReadOnlySpan<byte> data)
    {
        _hash.Append(data);
        Volatile.Write(ref _count, _count + data.Length);
    }

    public override long Position { get => BytesRead; set => throw new NotSupportedException(); }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _hash.Dispose();
            if (_segmentBuffer is not null) System.Buffers.ArrayPool<byte>.Shared.Return(_segmentBuffer);
            _segmentBuffer = null;
        }
        base.Dispose(disposing);
    }
}
