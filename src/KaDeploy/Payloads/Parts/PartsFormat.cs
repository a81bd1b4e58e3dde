namespace KaDeploy.Payloads.Parts;

/// <summary>What one part of a <see cref="PayloadKind.Parts"/> container holds.</summary>
public enum PartKind : byte
{
    /// <summary>The install manifest (JSON): layout, the parts that follow, the node list.</summary>
    Manifest = 1,
    /// <summary>A tar archive of one file system's tree.</summary>
    Tree = 2,
    /// <summary>A block map of one partition (zero blocks left out).</summary>
    BlockMap = 3,
    /// <summary>Opaque bytes.</summary>
    Raw = 4,
}

/// <summary>A part as announced in the stream: its place, kind and name (a mount point, a partition, "hooks").</summary>
public sealed record PartHeader(int Index, PartKind Kind, string Name);

/// <summary>
/// The multi-part container (docs/protocol.md section 5). Parts are records inside the one payload stream,
/// so wire offsets, ring retention, the spool and resume by offset know nothing about them:
/// <code>
/// "KAPARTS\x01"               (version 1: every part's digest is SHA-256)
/// | "KAPARTS\x02" u8 digest   (version 2: the digest algorithm, as in the End frame: 1 SHA-256, 2 BLAKE3, 3 XXH3-128)
/// part*   : u8 kind (1 manifest, 2 tree, 3 block map, 4 raw) | u16 len + name (UTF-8)
///           chunk* (u32 length in 1..MaxChunk | bytes)  u32 0  | 32-byte digest of the part's bytes
/// end     : u8 0xFF
/// </code>
/// All integers little endian; an XXH3-128 digest is followed by 16 zero bytes, as in the End frame. The writer
/// uses the session's digest (--digest), so a part costs what the End digest costs: the default XXH3-128 is
/// about 0.05 CPU-s per GiB on each side where SHA-256 was about 0.8 (bench/README.md, issue 6). Each part is checked against its own digest as it ends; the whole
/// payload is still covered by the session's End digest. Everything is bounded (chunk size, name
/// length, number of parts), and a violation is a one-line error naming the part.
/// </summary>
public static class PartsFormat
{
    /// <summary>The container's first eight bytes (version 1, SHA-256 digests).</summary>
    public static ReadOnlySpan<byte> Magic => "KAPARTS\x01"u8;

    /// <summary>The first eight bytes of a version 2 container, followed by its digest algorithm's byte.</summary>
    public static ReadOnlySpan<byte> MagicV2 => "KAPARTS\x02"u8;

    /// <summary>Largest chunk accepted (1 MiB): bounds what a reader must buffer.</summary>
    public const int MaxChunk = 1 << 20;

    /// <summary>Largest part name, in UTF-8 bytes.</summary>
    public const int MaxNameBytes = 1024;

    /// <summary>Most parts in one container.</summary>
    public const int MaxParts = 256;

    /// <summary>The byte that ends the container where a part's kind would be.</summary>
    public const byte EndMarker = 0xFF;

    /// <summary>Bytes of a part's digest.</summary>
    public const int DigestBytes = 32;

    internal static string Describe(PartHeader h) => $"part {h.Index} ({h.Kind} '{h.Name}')";

    /// <summary>The digest's name in messages: SHA-256, BLAKE3, XXH3-128.</summary>
    public static string DigestName(Protocol.DigestAlgorithm algorithm) => algorithm switch
    {
        Protocol.DigestAlgorithm.Sha256 => "SHA-256",
        Protocol.DigestAlgorithm.Blake3 => "BLAKE3",
        Protocol.DigestAlgorithm.XxHash128 => "XXH3-128",
        _ => $"digest {(byte)algorithm}",
    };
}
