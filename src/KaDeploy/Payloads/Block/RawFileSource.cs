using System.Buffers;

namespace KaDeploy.Payloads.Block;

/// <summary>Streams a regular file or a block device as it is (<see cref="PayloadKind.Raw"/>), in large reads.</summary>
public sealed class RawFileSource : IPayloadSource
{
    private const int BufferSize = 4 * 1024 * 1024;

    /// <summary>Opens <paramref name="path"/> now to fail early and to learn its length.</summary>
    public RawFileSource(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Path = path;
        using BlockFile file = BlockFile.OpenRead(path);
        Length = file.Length;
    }

    /// <summary>The file or device read.</summary>
    public string Path { get; }

    /// <summary>Its length when it was opened.</summary>
    public long Length { get; }

    /// <inheritdoc />
    public PayloadKind Kind => PayloadKind.Raw;

    /// <inheritdoc />
    public long? EstimatedLength => Length;

    /// <inheritdoc />
    public string Description => $"raw {Path} ({Length} bytes)";

    /// <inheritdoc />
    public async Task WriteToAsync(Stream output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(output);
        using BlockFile file = BlockFile.OpenRead(Path);
        byte[] current = ArrayPool<byte>.Shared.Rent(BufferSize);
        byte[] next = ArrayPool<byte>.Shared.Rent(BufferSize);
        Task<int>? pending = null;   // the next piece's read, overlapped with writing the current one
        try
        {
            long offset = 0;
            pending = file.ReadAtAsync(current.AsMemory(0, BufferSize), offset, cancellationToken).AsTask();
            while (true)
            {
                int n = await pending.ConfigureAwait(false);
                pending = null;
                if (n == 0) break;
                offset += n;
                pending = file.ReadAtAsync(next.AsMemory(0, BufferSize), offset, cancellationToken).AsTask();
                await output.WriteAsync(current.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                (current, next) = (next, current);
            }
            if (offset != Length)
                throw new KaDeployException($"{Path} changed length from {Length} to {offset} bytes while it was read");
        }
        finally
        {
            await OverlappedIo.ReturnAfterAsync(pending, current, next).ConfigureAwait(false);
        }
    }
}
