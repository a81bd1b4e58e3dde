namespace KaDeploy.Protocol;

/// <summary>
/// The end-to-end digest of the payload: named in the Plan, carried in the End frame (docs/protocol.md
/// section 3), computed by the server over what its source produced and by every node over what its sink
/// consumed.
/// </summary>
public enum DigestAlgorithm : byte
{
    /// <summary>SHA-256: comparable with <c>sha256sum</c> of the source; about 0.8 CPU-s per GiB on every node.</summary>
    Sha256 = 1,
    /// <summary>BLAKE3 (managed): faster than SHA-256 only where the build uses AVX-512 (see bench/README.md).</summary>
    Blake3 = 2,
    /// <summary>
    /// XXH3-128, zero-padded to 32 bytes: a 128-bit check against any accidental change (rsync's default file
    /// checksum) at about 0.05 CPU-s per GiB. Not a defence against forgery; neither is any digest in an unkeyed
    /// session, where the End frame itself can be forged, and a keyed session's AEAD tags authenticate every byte.
    /// </summary>
    XxHash128 = 3,
    /// <summary>
    /// The default: XXH3-128 over the sequence of frames, one 24-byte record per Data frame (u64 offset, u32 wire
    /// length, u32 flags, u64 check: the frame's XxHash3-64 of its payload seeded with its offset, or the first 8 bytes
    /// of a sealed frame's AEAD tag), zero-padded to 32 bytes. Every node already checks each frame's payload against
    /// that check (or opens it) before it forwards or writes it; this digest proves that the frames its sink consumed
    /// are exactly the server's, in order and complete, without a second pass over the payload
    /// (<c>Relay/FrameDigest</c>; docs/protocol.md section 3). Not comparable with a checksum tool; for that choose
    /// one of the content digests above.
    /// </summary>
    Frames = 4,
}

/// <summary>Names of <see cref="DigestAlgorithm"/> as the command line and the report spell them.</summary>
public static class DigestAlgorithms
{
    /// <summary>sha256, blake3, xxh128, frames.</summary>
    public static string Name(this DigestAlgorithm algorithm) => algorithm switch
    {
        DigestAlgorithm.Sha256 => "sha256",
        DigestAlgorithm.Blake3 => "blake3",
        DigestAlgorithm.XxHash128 => "xxh128",
        DigestAlgorithm.Frames => "frames",
        _ => $"digest-{(byte)algorithm}",
    };

    /// <summary>Parses a name given by <see cref="Name"/>; throws a one-line error otherwise.</summary>
    public static DigestAlgorithm Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "sha256" or "sha-256" => DigestAlgorithm.Sha256,
        "blake3" => DigestAlgorithm.Blake3,
        "xxh128" or "xxh3-128" => DigestAlgorithm.XxHash128,
        "frames" => DigestAlgorithm.Frames,
        _ => throw new KaDeployException($"unknown digest '{text}' (frames, xxh128, sha256 or blake3)"),
    };

    /// <summary>
    /// True for a digest of the payload's bytes (what a checksum tool computes), false for <see cref="DigestAlgorithm.Frames"/>,
    /// which is taken over the frames' checks.
    /// </summary>
    public static bool IsContentDigest(this DigestAlgorithm algorithm) => algorithm != DigestAlgorithm.Frames;

    /// <summary>
    /// The content digest for places that need one whatever the session's choice (the parts of a whole-node install, each
    /// checked as it ends): <see cref="DigestAlgorithm.Frames"/> maps to XXH3-128, any other is itself.
    /// </summary>
    public static DigestAlgorithm ContentDigest(this DigestAlgorithm algorithm) =>
        algorithm == DigestAlgorithm.Frames ? DigestAlgorithm.XxHash128 : algorithm;
}
