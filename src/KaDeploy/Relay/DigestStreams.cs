using System.IO.Hashing;
using System.Security.Cryptography;
using KaDeploy.IO;
using KaDeploy.Protocol;

namespace KaDeploy.Relay;

/// <summary>
/// An incremental end-to-end digest by <see cref="DigestAlgorithm"/>; the result is always
/// <see cref="Size"/> bytes (XXH3-128's 16 bytes are followed by 16 zeros), the End frame's digest field.
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
        else _blake3!.Update(data);
    }

    /// <summary>The digest of everything appended (call once).</summary>
    public byte[] Finish()
    {
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

/// <summary>Pass-through write stream that counts and digests the payload on its way to the wire.</summary>
public sealed class DigestWriteStream(Stream inner, DigestAlgorithm algorithm = DigestAlgorithm.Sha256) : SequentialWriteStream
{
    private readonly PayloadDigest _hash = new(algorithm);

    private long _count;

    /// <summary>Payload bytes written so far (safe to read from another thread for progress).</summary>
    public long Length64 => Volatile.Read(ref _count);

    /// <summary>The digest of everything written (call once, at the end).</summary>
    public byte[] Digest() => _hash.Finish();

    /// <summary>The digest's algorithm.</summary>
    public DigestAlgorithm Algorithm => _hash.Algorithm;

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        _hash.Append(buffer);
        Volatile.Write(ref _count, _count + buffer.Length);
        inner.Write(buffer);
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
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
/// Pass-through read stream that counts and digests what the sink consumes (or only counts it, when the digest
/// is computed elsewhere: <see cref="ReceivedDigest"/>). Lends segments (<see cref="ISegmentReader"/>) without a
/// copy when the stream below can, from a buffer of its own otherwise.
/// </summary>
/// <param name="inner">The stream read.</param>
/// <param name="algorithm">The digest's algorithm.</param>
/// <param name="hash">False: count only; <see cref="Digest"/> then refuses.</param>
public sealed class DigestReadStream(Stream inner, DigestAlgorithm algorithm = DigestAlgorithm.Sha256, bool hash = true) : SequentialReadStream, ISegmentReader
{
    private const int SegmentBufferSize = 1 << 20;
    private readonly PayloadDigest? _hash = hash ? new(algorithm) : null;
    private byte[]? _segmentBuffer;
    private long _count;

    /// <summary>Payload bytes read so far (safe to read from another thread for progress).</summary>
    public long BytesRead => Volatile.Read(ref _count);

    /// <summary>The digest of everything read (call once, at the end).</summary>
    public byte[] Digest() => (_hash ?? throw new InvalidOperationException("this stream only counts")).Finish();

    /// <summary>The digest's algorithm.</summary>
    public DigestAlgorithm Algorithm => algorithm;

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

    private void Account(ReadOnlySpan<byte> data)
    {
        _hash?.Append(data);
        Volatile.Write(ref _count, _count + data.Length);
    }

    public override long Position { get => BytesRead; set => throw new NotSupportedException(); }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _hash?.Dispose();
            if (_segmentBuffer is not null) System.Buffers.ArrayPool<byte>.Shared.Return(_segmentBuffer);
            _segmentBuffer = null;
        }
        base.Dispose(disposing);
    }
}

/// <summary>
/// A node's end-to-end digest, computed by its <see cref="FrameReceiver"/> right after each frame's check, while the
/// payload is still in the CPU's cache, instead of when the local sink reads it (a second trip through memory: the
/// streaming hash cost 1.8x the per-frame check there, bench/README.md issue 10). It covers the payload in clear as it
/// was checked and published, frame after frame in offset order, across every upstream link the node had: the
/// <paramref name="startOffset"/> bookkeeping refuses a frame out of place (a resumed link must start where the
/// digested frames end).
/// <para>
/// Why this covers what the sink writes: a published slot is not written again until every cursor, the local
/// sink's included, has released it (the ring's invariant that forwarding relies on too), and the client's receiver
/// is the only writer of its ring; so the bytes hashed here are the bytes the sink reads. The sink still counts what
/// it consumed, and the verdict compares that count with the End frame's payload length. Only a payload that is not
/// transformed on the way to the sink can be digested here: a compressed stream's digest is of the decompressed bytes,
/// which only the sink sees.
/// </para>
/// </summary>
public sealed class ReceivedDigest(DigestAlgorithm algorithm, long startOffset = 0) : IDisposable
{
    private readonly PayloadDigest _hash = new(algorithm);
    private long _next = startOffset;

    /// <summary>The algorithm.</summary>
    public DigestAlgorithm Algorithm => algorithm;

    /// <summary>Payload offset the next frame must start at (the end of everything digested).</summary>
    public long NextOffset => Volatile.Read(ref _next);

    /// <summary>Adds a checked frame's payload in clear, which must start at <see cref="NextOffset"/>.</summary>
    public void Append(long offset, ReadOnlySpan<byte> payload)
    {
        if (offset != _next)
            throw new ProtocolException($"end-to-end digest: frame at offset {offset}, but the digest ends at {_next}");
        _hash.Append(payload);
        Volatile.Write(ref _next, offset + payload.Length);
    }

    /// <summary>The digest of everything appended (call once, after the End frame was received).</summary>
    public byte[] Finish() => _hash.Finish();

    public void Dispose() => _hash.Dispose();
}
