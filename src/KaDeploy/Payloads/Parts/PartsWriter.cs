using System.Buffers.Binary;
using System.Text;
using KaDeploy.IO;
using KaDeploy.Protocol;
using KaDeploy.Relay;

namespace KaDeploy.Payloads.Parts;

/// <summary>
/// Writes a <see cref="PartsFormat"/> container: <see cref="BeginPartAsync"/> returns a stream the part's producer
/// writes into (chunked and hashed on the way), <see cref="EndPartAsync"/> closes it with its digest,
/// <see cref="FinishAsync"/> writes the end marker. Single-threaded, like the stream it writes to.
/// </summary>
public sealed class PartsWriter : IAsyncDisposable
{
    private readonly Stream _output;
    private readonly byte[] _buffer;
    private readonly int _chunk;
    private readonly DigestAlgorithm _digest;
    private PartStream? _open;
    private int _parts;
    private bool _started;
    private bool _finished;

    /// <param name="output">Where the container goes (not disposed).</param>
    /// <param name="chunkBytes">Chunk size, at most <see cref="PartsFormat.MaxChunk"/>; small writes are gathered up to it.</param>
    /// <param name="digest">Each part's digest: SHA-256 writes a version 1 container, any other a version 2 one that names it.</param>
    public PartsWriter(Stream output, int chunkBytes = 256 << 10, DigestAlgorithm digest = DigestAlgorithm.Sha256)
    {
        if (!Enum.IsDefined(digest) || !digest.IsContentDigest()) throw new ArgumentOutOfRangeException(nameof(digest), digest, "not a digest of a part's bytes");
        _digest = digest;
        ArgumentNullException.ThrowIfNull(output);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkBytes, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(chunkBytes, PartsFormat.MaxChunk);
        _output = output;
        _chunk = chunkBytes;
        _buffer = new byte[chunkBytes];
    }

    /// <summary>Bytes of the container written so far: where the next record starts (a part's offset in the payload,
    /// for the report and the live view, which place each node in a part by its payload bytes).</summary>
    public long Position { get; private set; }

    /// <summary>Bytes of each finished part so far, in order (for progress and the report).</summary>
    public List<(PartHeader Header, long Bytes, byte[] Digest)> Finished { get; } = [];

    /// <summary>The parts' digest algorithm.</summary>
    public DigestAlgorithm Digest => _digest;

    /// <summary>Starts a part; write its bytes to the returned stream, then call <see cref="EndPartAsync"/>.</summary>
    public async Task<Stream> BeginPartAsync(PartKind kind, string name, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (_open is not null) throw new InvalidOperationException("the previous part is still open");
        if (_finished) throw new InvalidOperationException("the container is finished");
        if (_parts >= PartsFormat.MaxParts) throw new KaDeployException($"more than {PartsFormat.MaxParts} parts");
        byte[] nameBytes = Encoding.UTF8.GetBytes(name);
        if (nameBytes.Length > PartsFormat.MaxNameBytes) throw new KaDeployException($"part name too long: {name[..40]}...");
        await StartAsync(ct).ConfigureAwait(false);
        var head = new byte[3 + nameBytes.Length];
        head[0] = (byte)kind;
        BinaryPrimitives.WriteUInt16LittleEndian(head.AsSpan(1), (ushort)nameBytes.Length);
        nameBytes.CopyTo(head, 3);
        await _output.WriteAsync(head, ct).ConfigureAwait(false);
        Position += head.Length;
        _open = new PartStream(this, new PartHeader(_parts, kind, name));
        _parts++;
        return _open;
    }

    /// <summary>Flushes the open part's last chunk and writes its terminator and SHA-256.</summary>
    public async Task EndPartAsync(CancellationToken ct)
    {
        var part = _open ?? throw new InvalidOperationException("no open part");
        await part.FlushChunkAsync(ct).ConfigureAwait(false);
        var tail = new byte[4 + PartsFormat.DigestBytes];
        byte[] digest = part.Hash.Finish();
        digest.CopyTo(tail, 4);
        await _output.WriteAsync(tail, ct).ConfigureAwait(false);
        Position += tail.Length;
        Finished.Add((part.Header, part.Bytes, digest));
        part.Hash.Dispose();
        _open = null;
    }

    private async Task StartAsync(CancellationToken ct)
    {
        if (_started) return;
        byte[] magic = _digest == DigestAlgorithm.Sha256 ? PartsFormat.Magic.ToArray() : [.. PartsFormat.MagicV2, (byte)_digest];
        await _output.WriteAsync(magic, ct).ConfigureAwait(false);
        Position += magic.Length;
        _started = true;
    }

    /// <summary>Writes one whole part from a buffer.</summary>
    public async Task WritePartAsync(PartKind kind, string name, ReadOnlyMemory<byte> bytes, CancellationToken ct)
    {
        var s = await BeginPartAsync(kind, name, ct).ConfigureAwait(false);
        await s.WriteAsync(bytes, ct).ConfigureAwait(false);
        await EndPartAsync(ct).ConfigureAwait(false);
    }

    /// <summary>Ends the container (starting it first if no part was written).</summary>
    public async Task FinishAsync(CancellationToken ct)
    {
        if (_open is not null) throw new InvalidOperationException("a part is still open");
        await StartAsync(ct).ConfigureAwait(false);
        await _output.WriteAsync(new[] { PartsFormat.EndMarker }, ct).ConfigureAwait(false);
        Position += 1;
        _finished = true;
    }

    /// <inheritdoc/>
    public ValueTask DisposeAsync()
    {
        _open?.Hash.Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>Gathers the producer's writes into chunks of the writer's size; hashes what passes.</summary>
    private sealed class PartStream(PartsWriter writer, PartHeader header) : SequentialWriteStream
    {
        private int _fill;
        public PartHeader Header { get; } = header;
        public PayloadDigest Hash { get; } = new(writer._digest);
        public long Bytes { get; private set; }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        // Synchronous writers get a synchronous path (no sync-over-async, no copy beyond the chunk buffer).
        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (!ReferenceEquals(writer._open, this)) throw new ObjectDisposedException("part stream", "the part has ended");
            Hash.Append(buffer);
            Bytes += buffer.Length;
            Span<byte> len = stackalloc byte[4];
            while (buffer.Length > 0)
            {
                if (_fill == 0 && buffer.Length >= writer._chunk)
                {
                    // A whole chunk in the producer's buffer (a file's data): framed where it is, not copied.
                    BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)writer._chunk);
                    writer._output.Write(len);
                    writer._output.Write(buffer[..writer._chunk]);
                    writer.Position += 4 + writer._chunk;
                    buffer = buffer[writer._chunk..];
                    continue;
                }
                int n = Math.Min(buffer.Length, writer._chunk - _fill);
                buffer[..n].CopyTo(writer._buffer.AsSpan(_fill));
                _fill += n;
                buffer = buffer[n..];
                if (_fill == writer._chunk)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)_fill);
                    writer._output.Write(len);
                    writer._output.Write(writer._buffer, 0, _fill);
                    writer.Position += 4 + _fill;
                    _fill = 0;
                }
            }
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (!ReferenceEquals(writer._open, this)) throw new ObjectDisposedException("part stream", "the part has ended");
            Hash.Append(buffer.Span);
            Bytes += buffer.Length;
            while (buffer.Length > 0)
            {
                if (_fill == 0 && buffer.Length >= writer._chunk)
                {
                    var len = new byte[4];
                    BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)writer._chunk);
                    await writer._output.WriteAsync(len, cancellationToken).ConfigureAwait(false);
                    await writer._output.WriteAsync(buffer[..writer._chunk], cancellationToken).ConfigureAwait(false);
                    writer.Position += 4 + writer._chunk;
                    buffer = buffer[writer._chunk..];
                    continue;
                }
                int n = Math.Min(buffer.Length, writer._chunk - _fill);
                buffer[..n].CopyTo(writer._buffer.AsMemory(_fill));
                _fill += n;
                buffer = buffer[n..];
                if (_fill == writer._chunk) await FlushChunkAsync(cancellationToken).ConfigureAwait(false);
            }
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public async Task FlushChunkAsync(CancellationToken ct)
        {
            if (_fill == 0) return;
            var len = new byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(len, (uint)_fill);
            await writer._output.WriteAsync(len, ct).ConfigureAwait(false);
            await writer._output.WriteAsync(writer._buffer.AsMemory(0, _fill), ct).ConfigureAwait(false);
            writer.Position += 4 + _fill;
            _fill = 0;
        }

        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
