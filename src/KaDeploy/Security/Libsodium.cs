using System.Runtime.InteropServices;

namespace KaDeploy.Security;

/// <summary>
/// The libsodium that ka-deploy ships beside its binary, for AEGIS-256 and AEGIS-128L (<see cref="StreamCipherKind"/>).
/// Loaded by full path from a fixed list of places, never by bare name: a bare "libsodium.so" would let the
/// dynamic loader pick the distribution's copy (Debian 12: 1.0.18, which has no AEGIS) or whatever
/// LD_LIBRARY_PATH offers. Places, in order: <c>$KA_DEPLOY_LIBSODIUM</c> (alone, when set), the binary's
/// directory, <c>../lib/ka-deploy/</c> from it (the Debian package's layout), and the build output's
/// <c>runtimes/RID/native/</c> (JIT builds and tests). The library must export AEGIS-256 (libsodium &gt;= 1.0.19).
/// </summary>
public sealed unsafe class Libsodium
{
    /// <summary>Name of the environment variable that points at a libsodium to use instead of the shipped one.</summary>
    public const string PathVariable = "KA_DEPLOY_LIBSODIUM";

    /// <summary>Bytes of an AEGIS-256 key, nonce and tag (libsodium's crypto_aead_aegis256_*BYTES).</summary>
    public const int AegisKeySize = 32, AegisNonceSize = 32, AegisTagSize = 32;

    /// <summary>Bytes of an AEGIS-128L key and nonce (its tag is 32 bytes too).</summary>
    public const int Aegis128LKeySize = 16, Aegis128LNonceSize = 16;

    private static readonly Lazy<(Libsodium? Library, string Reason)> Shipped = new(() => TryLoad(DefaultCandidates()));

    // int crypto_aead_aegis*_encrypt_detached(c, mac, maclen_p, m, mlen, ad, adlen, nsec, npub, k)
    private readonly delegate* unmanaged<byte*, byte*, ulong*, byte*, ulong, byte*, ulong, byte*, byte*, byte*, int> _seal, _seal128L;
    // int crypto_aead_aegis*_decrypt_detached(m, nsec, c, clen, mac, ad, adlen, npub, k)
    private readonly delegate* unmanaged<byte*, byte*, byte*, ulong, byte*, byte*, ulong, byte*, byte*, int> _open, _open128L;

    private Libsodium(string path, string version, nint seal, nint open, nint seal128L, nint open128L)
    {
        Path = path;
        Version = version;
        _seal = (delegate* unmanaged<byte*, byte*, ulong*, byte*, ulong, byte*, ulong, byte*, byte*, byte*, int>)seal;
        _open = (delegate* unmanaged<byte*, byte*, byte*, ulong, byte*, byte*, ulong, byte*, byte*, int>)open;
        _seal128L = (delegate* unmanaged<byte*, byte*, ulong*, byte*, ulong, byte*, ulong, byte*, byte*, byte*, int>)seal128L;
        _open128L = (delegate* unmanaged<byte*, byte*, byte*, ulong, byte*, byte*, ulong, byte*, byte*, int>)open128L;
    }

    /// <summary>The file that was loaded.</summary>
    public string Path { get; }

    /// <summary>libsodium's own version string ("1.0.22").</summary>
    public string Version { get; }

    /// <summary>The shipped libsodium, loaded once per process; null with <paramref name="reason"/> when it cannot run AEGIS-256.</summary>
    public static Libsodium? Load(out string reason)
    {
        var (library, why) = Shipped.Value;
        reason = why;
        return library;
    }

    /// <summary>The places looked at, in order (see the class summary).</summary>
    public static IReadOnlyList<string> DefaultCandidates()
    {
        if (Environment.GetEnvironmentVariable(PathVariable) is { Length: > 0 } chosen) return [chosen];
        string dir = AppContext.BaseDirectory;
        string arch = RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
        return
        [
            System.IO.Path.Combine(dir, "libsodium.so"),
            System.IO.Path.GetFullPath(System.IO.Path.Combine(dir, "../lib/ka-deploy/libsodium.so")),
            System.IO.Path.Combine(dir, "runtimes", $"linux-{arch}", "native", "libsodium.so"),
        ];
    }

    /// <summary>
    /// Loads the first of <paramref name="candidates"/> that exists and checks it can run AEGIS-256. On failure
    /// the reason is one line naming what was looked at and what was wrong.
    /// </summary>
    public static (Libsodium? Library, string Reason) TryLoad(IReadOnlyList<string> candidates)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        string? path = candidates.FirstOrDefault(File.Exists);
        if (path is null)
            return (null, $"libsodium >= 1.0.19 with AEGIS not found beside ka-deploy (looked for {string.Join(", ", candidates)})");
        if (!NativeLibrary.TryLoad(path, out nint handle))
            return (null, $"{path} could not be loaded (not a libsodium for this machine?); AEGIS needs libsodium >= 1.0.19");
        string version = "unknown version";
        if (NativeLibrary.TryGetExport(handle, "sodium_version_string", out nint versionFn))
            version = Marshal.PtrToStringUTF8((nint)((delegate* unmanaged<byte*>)versionFn)()) ?? version;
        if (!NativeLibrary.TryGetExport(handle, "sodium_init", out nint init)
            || !NativeLibrary.TryGetExport(handle, "crypto_aead_aegis256_encrypt_detached", out nint seal)
            || !NativeLibrary.TryGetExport(handle, "crypto_aead_aegis256_decrypt_detached", out nint open)
            || !NativeLibrary.TryGetExport(handle, "crypto_aead_aegis256_abytes", out nint abytes)
            || !NativeLibrary.TryGetExport(handle, "crypto_aead_aegis256_npubbytes", out nint npubbytes)
            || !NativeLibrary.TryGetExport(handle, "crypto_aead_aegis256_keybytes", out nint keybytes)
            || !NativeLibrary.TryGetExport(handle, "crypto_aead_aegis128l_encrypt_detached", out nint seal128L)
            || !NativeLibrary.TryGetExport(handle, "crypto_aead_aegis128l_decrypt_detached", out nint open128L)
            || !NativeLibrary.TryGetExport(handle, "crypto_aead_aegis128l_npubbytes", out nint npubbytes128L)
            || !NativeLibrary.TryGetExport(handle, "crypto_aead_aegis128l_keybytes", out nint keybytes128L))
            return (null, $"{path} is libsodium {version}, without AEGIS (libsodium >= 1.0.19 needed)");
        // sodium_init picks the AES-NI code paths; 0 = done now, 1 = done before, -1 = failed.
        if (((delegate* unmanaged<int>)init)() < 0) return (null, $"{path}: sodium_init failed");
        if (((delegate* unmanaged<nuint>)abytes)() != AegisTagSize || ((delegate* unmanaged<nuint>)npubbytes)() != AegisNonceSize
            || ((delegate* unmanaged<nuint>)keybytes)() != AegisKeySize
            || ((delegate* unmanaged<nuint>)npubbytes128L)() != Aegis128LNonceSize || ((delegate* unmanaged<nuint>)keybytes128L)() != Aegis128LKeySize)
            return (null, $"{path} (libsodium {version}) has AEGIS sizes other than libsodium's (32-byte tags; AEGIS-256 32-byte key and nonce, AEGIS-128L 16)");
        return (new Libsodium(path, version, seal, open, seal128L, open128L), "");
    }

    /// <summary>AEGIS-256 (or, <paramref name="aegis128L"/>, AEGIS-128L) seal: <paramref name="ciphertext"/> (same length as <paramref name="plaintext"/>) and a 32-byte tag.</summary>
    internal void Seal(bool aegis128L, ReadOnlySpan<byte> key, ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> plaintext, Span<byte> ciphertext, Span<byte> tag, ReadOnlySpan<byte> associatedData)
    {
        CheckSizes(aegis128L, key, nonce, tag, plaintext.Length, ciphertext.Length);
        fixed (byte* k = key, n = nonce, m = plaintext, c = ciphertext, t = tag, ad = associatedData)
        {
            ulong tagLength;
            if ((aegis128L ? _seal128L : _seal)(c, t, &tagLength, m, (ulong)plaintext.Length, ad, (ulong)associatedData.Length, null, n, k) != 0)
                throw new System.Security.Cryptography.CryptographicException("AEGIS encryption failed");
        }
    }

    /// <summary>AEGIS-256 (or AEGIS-128L) open: false if the tag does not match (libsodium then clears <paramref name="plaintext"/>).</summary>
    internal bool Open(bool aegis128L, ReadOnlySpan<byte> key, ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> ciphertext, ReadOnlySpan<byte> tag, Span<byte> plaintext, ReadOnlySpan<byte> associatedData)
    {
        CheckSizes(aegis128L, key, nonce, tag, plaintext.Length, ciphertext.Length);
        fixed (byte* k = key, n = nonce, c = ciphertext, t = tag, m = plaintext, ad = associatedData)
            return (aegis128L ? _open128L : _open)(m, null, c, (ulong)ciphertext.Length, t, ad, (ulong)associatedData.Length, n, k) == 0;
    }

    // libsodium reads exactly its sizes from these pointers: a short span would be read past its end.
    private static void CheckSizes(bool aegis128L, ReadOnlySpan<byte> key, ReadOnlySpan<byte> nonce, ReadOnlySpan<byte> tag, int plaintext, int ciphertext)
    {
        if (key.Length != (aegis128L ? Aegis128LKeySize : AegisKeySize) || nonce.Length != (aegis128L ? Aegis128LNonceSize : AegisNonceSize)
            || tag.Length != AegisTagSize || ciphertext != plaintext)
            throw new ArgumentException("AEGIS key, nonce or tag of the wrong size, or ciphertext and plaintext of different lengths");
    }
}
