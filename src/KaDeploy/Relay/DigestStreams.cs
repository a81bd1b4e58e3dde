using KaDeploy.IO;
using System.Security.Cryptography;

namespace KaDeploy.Relay;

/// <summary>Pass-through write stream that counts and SHA-256-hashes the payload on its way to the wire.</summary>
public sealed class DigestWriteStream(Stream inner) : SequentialWriteStream
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

    private long _count;

    /// <summary>Payload bytes written so far (safe to read from another thread for progress).</summary>
    public long Length64 => Volatile.Read(ref _count);

    /// <summary>SHA-256 of everything written (call once, at the end).</summary>
    public byte[] Digest() => _hash.GetHashAndReset();

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        _hash.AppendData(buffer);
        Volatile.Write(ref _count, _count + buffer.Length);
        inner.Write(buffer);
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        _hash.AppendData(buffer.Span);
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

/// <summary>Pass-through read stream that counts and SHA-256-hashes what the sink consumes.</summary>
public sealed class DigestReadStream(Stream inner) : SequentialReadStream
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private long _count;

    /// <summary>Payload bytes read so far (safe to read from another thread for progress).</summary>
    public long BytesRead => Volatile.Read(ref _count);

    /// <summary>SHA-256 of everything read (call once, at the end).</summary>
    public byte[] Digest() => _hash.GetHashAndReset();

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

    private void Account(ReadOnlySpan<byte> data)
    {
        _hash.AppendData(data);
        Volatile.Write(ref _count, _count + data.Length);
    }

    public override long Position { get => BytesRead; set => throw new NotSupportedException(); }

    protected override void Dispose(bool disposing)
    {
        if (disposing) _hash.Dispose();
        base.Dispose(disposing);
    }
}
