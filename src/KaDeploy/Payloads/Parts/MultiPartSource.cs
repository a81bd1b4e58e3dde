namespace KaDeploy.Payloads.Parts;

/// <summary>One part a <see cref="MultiPartSource"/> sends: a name and the source that produces its bytes.</summary>
/// <param name="Kind">What the part holds.</param>
/// <param name="Name">Its name in the stream (a mount point, "partition 3", "hooks", "manifest").</param>
/// <param name="Source">Produces the bytes (a tree, a block device, a buffer).</param>
public sealed record PartSource(PartKind Kind, string Name, IPayloadSource Source);

/// <summary>What a <see cref="MultiPartSource"/> reports as parts start and end.</summary>
/// <param name="Header">The part.</param>
/// <param name="Finished">False when the part starts, true when it ends.</param>
/// <param name="Bytes">The part's bytes (0 at its start).</param>
/// <param name="Elapsed">Time the part took (zero at its start).</param>
/// <param name="Offset">Where the part's record starts in the payload (the container).</param>
/// <param name="End">Where the next record starts, once the part has ended (its terminator and digest included); 0 at its start.</param>
/// <param name="Digest">The part's digest once it has ended (<see cref="MultiPartSource.Digest"/>); null at its start.</param>
public sealed record PartEvent(PartHeader Header, bool Finished, long Bytes, TimeSpan Elapsed, long Offset = 0, long End = 0, byte[]? Digest = null);

/// <summary>
/// Server side of a multi-part session: writes each part's source into one <see cref="PartsFormat"/> container,
/// so the whole install (manifest, every file system, raw partitions, hooks) is one stream with one End digest.
/// </summary>
public sealed class MultiPartSource : IPayloadSource, IPayloadEstimate
{
    private readonly IReadOnlyList<PartSource> _parts;

    /// <param name="parts">The parts, in stream order (the manifest first, by convention of the installer).</param>
    /// <param name="onPart">Called as each part starts and ends (progress, the report); may be null.</param>
    /// <param name="digest">Each part's digest (the session's, so that a part costs what the End digest costs).</param>
    public MultiPartSource(IReadOnlyList<PartSource> parts, Action<PartEvent>? onPart = null, Protocol.DigestAlgorithm digest = Protocol.DigestAlgorithm.Sha256)
    {
        Digest = digest;
        ArgumentNullException.ThrowIfNull(parts);
        if (parts.Count == 0) throw new ArgumentException("no parts", nameof(parts));
        if (parts.Count > PartsFormat.MaxParts) throw new KaDeployException($"more than {PartsFormat.MaxParts} parts");
        _parts = parts;
        OnPart = onPart;
    }

    /// <summary>Each part's digest algorithm.</summary>
    public Protocol.DigestAlgorithm Digest { get; }

    /// <summary>Receives part start/end events.</summary>
    public Action<PartEvent>? OnPart { get; set; }

    /// <inheritdoc/>
    public PayloadKind Kind => PayloadKind.Parts;

    /// <inheritdoc/>
    public long? EstimatedLength => _parts.All(p => p.Source.EstimatedLength is not null)
        ? _parts.Sum(p => p.Source.EstimatedLength!.Value) : null;

    /// <inheritdoc/>
    public string Description => $"{_parts.Count} parts: " + string.Join(", ", _parts.Select(p => $"{p.Kind.ToString().ToLowerInvariant()} {p.Name}"));

    /// <summary>The parts, in order.</summary>
    public IReadOnlyList<PartSource> Parts => _parts;

    /// <inheritdoc/>
    public async Task<long> EstimateLengthAsync(CancellationToken cancellationToken)
    {
        long total = 0;
        foreach (var p in _parts)
        {
            total += p.Source.EstimatedLength
                ?? (p.Source is IPayloadEstimate e ? await e.EstimateLengthAsync(cancellationToken).ConfigureAwait(false) : 0);
        }
        return total;
    }

    /// <inheritdoc/>
    public async Task WriteToAsync(Stream output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(output);
        await using var writer = new PartsWriter(output, digest: Digest);
        foreach (var p in _parts)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            long offset = writer.Position;
            var stream = await writer.BeginPartAsync(p.Kind, p.Name, cancellationToken).ConfigureAwait(false);
            var header = new PartHeader(writer.Finished.Count, p.Kind, p.Name);
            OnPart?.Invoke(new PartEvent(header, false, 0, TimeSpan.Zero, offset));
            try
            {
                await p.Source.WriteToAsync(stream, cancellationToken).ConfigureAwait(false);
            }
            catch (KaDeployException e)
            {
                throw new KaDeployException($"{PartsFormat.Describe(header)}: {e.Message}", e);
            }
            await writer.EndPartAsync(cancellationToken).ConfigureAwait(false);
            OnPart?.Invoke(new PartEvent(header, true, writer.Finished[^1].Bytes, clock.Elapsed, offset, writer.Position, writer.Finished[^1].Digest));
        }
        await writer.FinishAsync(cancellationToken).ConfigureAwait(false);
    }
}

/// <summary>A part whose bytes are already in memory (the manifest).</summary>
public sealed class BufferSource(ReadOnlyMemory<byte> bytes, string description, PayloadKind kind = PayloadKind.Raw) : IPayloadSource
{
    /// <inheritdoc/>
    public PayloadKind Kind => kind;
    /// <inheritdoc/>
    public long? EstimatedLength => bytes.Length;
    /// <inheritdoc/>
    public string Description => description;
    /// <inheritdoc/>
    public Task WriteToAsync(Stream output, CancellationToken cancellationToken) => output.WriteAsync(bytes, cancellationToken).AsTask();
}
