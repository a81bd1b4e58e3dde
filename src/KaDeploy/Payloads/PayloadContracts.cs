namespace KaDeploy.Payloads;

/// <summary>What the bytes of a session's stream mean, so a client can pick its sink.</summary>
public enum PayloadKind : byte
{
    /// <summary>A POSIX/PAX tar archive of a file tree.</summary>
    Tar = 1,
    /// <summary>An opaque byte stream (a command's output, a raw file).</summary>
    Raw = 2,
    /// <summary>A block map: a raw disk image with all-zero blocks left out (see BlockMapFormat).</summary>
    BlockMap = 3,
    /// <summary>A multi-part container: a manifest, then file trees and partitions (see Parts/PartsFormat, docs/protocol.md section 5).</summary>
    Parts = 4,
}

/// <summary>Produces the payload on the server. Written once, at the root of the tree.</summary>
public interface IPayloadSource
{
    /// <summary>How a client should interpret the stream.</summary>
    PayloadKind Kind { get; }

    /// <summary>Expected number of payload bytes when known in advance (for progress and ETA), else null.</summary>
    long? EstimatedLength { get; }

    /// <summary>One line for logs: "tree /srv/golden", "image disk.img", ...</summary>
    string Description { get; }

    /// <summary>Writes the whole payload to <paramref name="output"/>; throws on any failure. Does not dispose the stream.</summary>
    Task WriteToAsync(Stream output, CancellationToken cancellationToken);
}

/// <summary>
/// A source whose length is not known up front but can be estimated (a file tree: a metadata walk).
/// The server runs the estimate while it waits for clients, for progress and ETA on both sides.
/// </summary>
public interface IPayloadEstimate
{
    /// <summary>Approximate payload bytes; never needed for correctness.</summary>
    Task<long> EstimateLengthAsync(CancellationToken cancellationToken);
}

/// <summary>Consumes the payload on a client (extracts a tree, writes a disk, feeds a command).</summary>
public interface IPayloadSink
{
    /// <summary>One line for logs.</summary>
    string Description { get; }

    /// <summary>
    /// Reads the payload from <paramref name="input"/> and makes it durable. Throws <see cref="KaDeployException"/>
    /// (one-line message) on any failure. Must not return before everything it wrote is flushed to storage.
    /// It need not read trailing bytes after its format's end; the caller drains and hashes them.
    /// </summary>
    Task ConsumeAsync(Stream input, CancellationToken cancellationToken);
}
