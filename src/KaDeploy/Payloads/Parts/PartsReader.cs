using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using KaDeploy.IO;
using KaDeploy.Protocol;
using KaDeploy.Relay;

namespace KaDeploy.Payloads.Parts;

/// <summary>
/// Reads a <see cref="PartsFormat"/> container part by part. <see cref="NextPartAsync"/> returns each part's
/// header and a stream of exactly its bytes; that stream ends at the part's end and checks the part's SHA-256
/// there (a mismatch, a bad chunk length, or a truncation throws a <see cref="KaDeployException"/> naming the part).
/// Whatever a consumer leaves unread of a part is read, hashed and checked by the next call.
/// </summary>
public sealed class PartsReader
{
    private readonly Stream _input;
    private readonly byte[] _small = new byte[8];
    private PartReadStream? _current;
    private int _count;
    private bool _ended;

    /// <param name="input">The container (not disposed).</param>
    public PartsReader(Stream input)
    {
        ArgumentNullException.ThrowIfNull(input);
        _input = input;
    }

    /// <summary>The parts' digest algorithm, as the container names it (known once the first part is read).</summary>
    public DigestAlgorithm Digest { get; private set; } = DigestAlgorithm.Sha256;

    /// <summary>Every part read so far with its length, in order.</summary>
    public List<(PartHeader Header, long Bytes)> Completed { get; } = [];

    /// <summary>The next part, or null after the end marker. Finishes (and verifies) the previous part first.</summary>
    public async Task<(PartHeader Header, Stream Content)?> NextPartAsync(CancellationToken ct)
    {
        if (_ended) return null;
        if (_current is not null)
        {
            await _current.DrainAsync(ct).ConfigureAwait(false);
            _current = null;
        }
        if (_count == 0)
        {
            await ReadExactAsync(_small.AsMemory(0, 8), "the container's magic", ct).ConfigureAwait(false);
            if (_small.AsSpan(0, 8).SequenceEqual(PartsFormat.MagicV2))
            {
                await ReadExactAsync(_small.AsMemory(0, 1), "the container's digest algorithm", ct).ConfigureAwait(false);
                if (!Enum.IsDefined((DigestAlgorithm)_small[0]) || !((DigestAlgorithm)_small[0]).IsContentDigest())
                    throw new KaDeployException($"multi-part payload names an unknown digest algorithm {_small[0]}");
                Digest = (DigestAlgorithm)_small[0];
            }
            else if (!_small.AsSpan(0, 8).SequenceEqual(PartsFormat.Magic))
                throw new KaDeployException("not a ka-deploy multi-part payload (bad magic)");
        }
        await ReadExactAsync(_small.AsMemory(0, 1), $"part {_count}'s header", ct).ConfigureAwait(false);
        byte kind = _small[0];
        if (kind == PartsFormat.EndMarker)
        {
            _ended = true;
            return null;
        }
        if (!Enum.IsDefined((PartKind)kind)) throw new KaDeployException($"part {_count}: unknown part kind {kind}");
        if (_count >= PartsFormat.MaxParts) throw new KaDeployException($"more than {PartsFormat.MaxParts} parts");
        await ReadExactAsync(_small.AsMemory(0, 2), $"part {_count}'s name length", ct).ConfigureAwait(false);
        int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(_small);
        if (nameLength > PartsFormat.MaxNameBytes) throw new KaDeployException($"part {_count}: name of {nameLength} bytes (limit {PartsFormat.MaxNameBytes})");
        var nameBytes = new byte[nameLength];
        await ReadExactAsync(nameBytes, $"part {_count}'s name", ct).ConfigureAwait(false);
        string name;
        try
        {
            name = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(nameBytes);
        }
        catch (DecoderFallbackException)
        {
            throw new KaDeployException($"part {_count}: name is not valid UTF-8");
        }
        if (name.Contains('\0')) throw new KaDeployException($"part {_count}: name contains NUL");
        var header = new PartHeader(_count, (PartKind)kind, name);
        _count++;
        _current = new PartReadStream(this, header);
        return (header, _current);
    }

    /// <summary>Reads a whole (small) part into memory, refusing one larger than <paramref name="limit"/>.</summary>
    public static async Task<byte[]> ReadAllAsync(PartHeader header, Stream content, int limit, CancellationToken ct)
    {
        var ms = new MemoryStream();
        var buffer = new byte[64 << 10];
        int n;
        while ((n = await content.ReadAsync(buffer, ct).ConfigureAwait(false)) > 0)
        {
            if (ms.Length + n > limit) throw new KaDeployException($"{PartsFormat.Describe(header)} is larger than {limit} bytes");
            ms.Write(buffer, 0, n);
        }
        return ms.ToArray();
    }

    private async Task ReadExactAsync(Memory<byte> buffer, string what, CancellationToken ct)
    {
        try
        {
            await _input.ReadExactlyAsync(buffer, ct).ConfigureAwait(false);
        }
        catch (EndOfStreamException)
        {
            throw new KaDeployException($"multi-part payload truncated in {what}");
        }
    }

    /// <summary>The bytes of one part: chunk by chunk, hashed, verified at the terminator.</summary>
    private sealed class PartReadStream(PartsReader reader, PartHeader header) : SequentialReadStream
    {
        private readonly PayloadDigest _hash = new(reader.Digest);
        private int _left;      // bytes left in the current chunk
        private bool _done;
        private long _bytes;

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        // Synchronous readers (a tar extractor's data copy) get a synchronous path: no sync-over-async, no copy.
        public override int Read(Span<byte> buffer)
        {
            if (buffer.Length == 0) return 0;
            while (_left == 0)
            {
                if (_done) return 0;
                ReadExactSync(reader._small.AsSpan(0, 4), PartsFormat.Describe(header));
                uint len = BinaryPrimitives.ReadUInt32LittleEndian(reader._small);
                if (len == 0)
                {
                    var digest = new byte[PartsFormat.DigestBytes];
                    ReadExactSync(digest, $"{PartsFormat.Describe(header)}'s digest");
                    Check(digest);
                    return 0;
                }
                if (len > PartsFormat.MaxChunk)
                    throw new KaDeployException($"{PartsFormat.Describe(header)}: chunk of {len} bytes (limit {PartsFormat.MaxChunk})");
                _left = (int)len;
            }
            int n = reader._input.Read(buffer[..Math.Min(buffer.Length, _left)]);
            if (n == 0) throw new KaDeployException($"multi-part payload truncated in {PartsFormat.Describe(header)}");
            _hash.Append(buffer[..n]);
            _left -= n;
            _bytes += n;
            return n;
        }

        private void ReadExactSync(Span<byte> buffer, string what)
        {
            try
            {
                reader._input.ReadExactly(buffer);
            }
            catch (EndOfStreamException)
            {
                throw new KaDeployException($"multi-part payload truncated in {what}");
            }
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (buffer.Length == 0) return 0;
            while (_left == 0)
            {
                if (_done) return 0;
                await reader.ReadExactAsync(reader._small.AsMemory(0, 4), $"{PartsFormat.Describe(header)}", cancellationToken).ConfigureAwait(false);
                uint len = BinaryPrimitives.ReadUInt32LittleEndian(reader._small);
                if (len == 0)
                {
                    await FinishAsync(cancellationToken).ConfigureAwait(false);
                    return 0;
                }
                if (len > PartsFormat.MaxChunk)
                    throw new KaDeployException($"{PartsFormat.Describe(header)}: chunk of {len} bytes (limit {PartsFormat.MaxChunk})");
                _left = (int)len;
            }
            int want = Math.Min(buffer.Length, _left);
            int n = await reader._input.ReadAsync(buffer[..want], cancellationToken).ConfigureAwait(false);
            if (n == 0) throw new KaDeployException($"multi-part payload truncated in {PartsFormat.Describe(header)}");
            _hash.Append(buffer.Span[..n]);
            _left -= n;
            _bytes += n;
            return n;
        }

        private async Task FinishAsync(CancellationToken ct)
        {
            var digest = new byte[PartsFormat.DigestBytes];
            await reader.ReadExactAsync(digest, $"{PartsFormat.Describe(header)}'s digest", ct).ConfigureAwait(false);
            Check(digest);
        }

        private void Check(byte[] digest)
        {
            byte[] mine = _hash.Finish();
            _hash.Dispose();
            _done = true;
            if (!CryptographicOperations.FixedTimeEquals(mine, digest))
                throw new KaDeployException($"{PartsFormat.Describe(header)}: {PartsFormat.DigestName(reader.Digest)} mismatch (got {Convert.ToHexStringLower(mine)[..16]}..., sent {Convert.ToHexStringLower(digest)[..16]}...)");
            reader.Completed.Add((header, _bytes));
        }

        public async Task DrainAsync(CancellationToken ct)
        {
            var sink = new byte[64 << 10];
            while (await ReadAsync(sink, ct).ConfigureAwait(false) > 0) { }
        }

        protected override void Dispose(bool disposing)
        {
            // The reader drains what is left on the next part; the hash lives until then.
            base.Dispose(disposing);
        }
    }
}
