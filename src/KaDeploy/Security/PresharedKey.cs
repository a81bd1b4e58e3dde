using System.Security.Cryptography;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace KaDeploy.Security;

/// <summary>
/// The cluster's (or session's) pre-shared key: 32 random bytes that every node and the server hold
/// and that never travel (the handshake proves possession with HMACs over fresh nonces).
/// A key file is one line of base64 (lines starting with '#' are comments); a file readable or
/// writable by group or others is refused, as ssh refuses such a private key.
/// </summary>
public sealed class PresharedKey : IDisposable
{
    /// <summary>Bytes of a key.</summary>
    public const int Size = 32;

    /// <summary>The kernel command-line argument a network-booted node may carry its key in.</summary>
    public const string KernelArgument = "ka.key=";

    private readonly byte[] _key;

    private PresharedKey(byte[] key)
    {
        _key = key;
        // A short tag that names the key in logs without revealing it (HMAC of a label, one-way).
        Fingerprint = Convert.ToHexStringLower(HMACSHA256.HashData(key, "kd2 fingerprint"u8)[..6]);
    }

    /// <summary>12 hex digits that identify the key in logs and reports; the key cannot be derived from it.</summary>
    public string Fingerprint { get; }

    /// <summary>The key material, for the handshake and key derivation only.</summary>
    internal ReadOnlySpan<byte> Bytes => _key;

    /// <summary>A new random key.</summary>
    public static PresharedKey Generate() => new(RandomNumberGenerator.GetBytes(Size));

    /// <summary>Builds a key from its 32 raw bytes (tests, and keys taken from elsewhere).</summary>
    public static PresharedKey FromBytes(ReadOnlySpan<byte> key)
    {
        if (key.Length != Size) throw new KaDeployException($"a key is {Size} bytes, not {key.Length}");
        return new PresharedKey(key.ToArray());
    }

    /// <summary>Parses the text of a key file: one base64 line of 32 bytes, '#' comment lines and blank lines ignored.</summary>
    /// <param name="text">File contents.</param>
    /// <param name="source">Where it came from, for the error message (never the key itself).</param>
    public static PresharedKey Parse(string text, string source)
    {
        ArgumentNullException.ThrowIfNull(text);
        string? line = null;
        foreach (var raw in text.Split('\n'))
        {
            var l = raw.Trim();
            if (l.Length == 0 || l[0] == '#') continue;
            if (line is not null) throw new KaDeployException($"{source}: more than one key line");
            line = l;
        }
        if (line is null) throw new KaDeployException($"{source}: no key in it (generate one with 'ka-deploy keygen FILE')");
        return Decode(line, source);
    }

    private static PresharedKey Decode(string base64, string source)
    {
        var buffer = new byte[Size + 3];
        if (!Convert.TryFromBase64String(base64, buffer, out int n) || n != Size)
        {
            CryptographicOperations.ZeroMemory(buffer);
            throw new KaDeployException($"{source}: not a ka-deploy key (expected {Size} bytes in base64; 'ka-deploy keygen FILE' makes one)");
        }
        var key = buffer[..Size];
        CryptographicOperations.ZeroMemory(buffer);
        return new PresharedKey(key);
    }

    /// <summary>
    /// Loads a key file. The file must be a regular file that neither group nor others can read or
    /// write; its mode is checked on the opened descriptor, so a swap between check and read is
    /// impossible. <c>/proc/cmdline</c> is the exception: the key is then taken from the
    /// <c>ka.key=</c> argument of the kernel command line (see <see cref="FromKernelCommandLine"/>).
    /// </summary>
    public static PresharedKey LoadFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (Path.GetFullPath(path) == "/proc/cmdline")
            return FromKernelCommandLine(File.ReadAllText(path), path);
        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"key file {path}: {e.Message}");
        }
        using (handle)
        {
            if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("key files are guarded by Unix modes");
            var mode = File.GetUnixFileMode(handle);
            const UnixFileMode open = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
                | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;
            if ((mode & open) != 0)
                throw new KaDeployException($"key file {path} is accessible by group or others (mode {ModeString(mode)}); chmod 600 {path}");
            long length = RandomAccess.GetLength(handle);
            if (length > 4096) throw new KaDeployException($"key file {path} is {length} bytes, not a ka-deploy key");
            var bytes = new byte[length];
            int read = RandomAccess.Read(handle, bytes, 0);
            try
            {
                return Parse(Encoding.UTF8.GetString(bytes, 0, read), $"key file {path}");
            }
            finally
            {
                CryptographicOperations.ZeroMemory(bytes);
            }
        }
    }

    /// <summary>
    /// Takes the key from a kernel command line's <c>ka.key=BASE64</c> argument (for nodes booted
    /// from the network). The command line is readable by every local user and by whoever can read
    /// the boot configuration on the TFTP server: README "Security" says when that is acceptable.
    /// </summary>
    public static PresharedKey FromKernelCommandLine(string cmdline, string source = "kernel command line")
    {
        ArgumentNullException.ThrowIfNull(cmdline);
        string? value = null;
        foreach (var word in cmdline.Split([' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries))
            if (word.StartsWith(KernelArgument, StringComparison.Ordinal)) value = word[KernelArgument.Length..].Trim('"');
        if (value is null) throw new KaDeployException($"{source}: no {KernelArgument}<base64> argument");
        return Decode(value, source);
    }

    /// <summary>
    /// The <c>ka.key=BASE64</c> kernel argument for a network-boot configuration (<c>ka-deploy netboot serve
    /// --key-file</c>): the key in clear, for the boot configuration file only, never for a log. README
    /// "Security" says who can read it there.
    /// </summary>
    public string ToKernelArgument() => KernelArgument + Convert.ToBase64String(_key);

    /// <summary>
    /// <c>ka-deploy keygen FILE</c>: writes a new random key to a file that did not exist, created
    /// with mode 0600 from the start (never readable by others, not even for an instant).
    /// </summary>
    /// <returns>The new key's fingerprint.</returns>
    public static string WriteNewKeyFile(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (OperatingSystem.IsWindows()) throw new PlatformNotSupportedException("key files are guarded by Unix modes");
        using var key = Generate();
        var text = Encoding.ASCII.GetBytes(
            "# ka-deploy pre-shared key: keep it mode 0600, give it to the server and every node (--key-file)\n"
            + Convert.ToBase64String(key._key) + "\n");
        try
        {
            using var fs = new FileStream(path, new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
            });
            fs.Write(text);
            fs.Flush(flushToDisk: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"keygen: cannot create {path}: {e.Message}");
        }
        finally
        {
            CryptographicOperations.ZeroMemory(text);
        }
        return key.Fingerprint;
    }

    private static string ModeString(UnixFileMode mode) => Convert.ToString((int)mode & 0x1FF, 8).PadLeft(4, '0');

    /// <summary>Never the key: its fingerprint.</summary>
    public override string ToString() => $"key {Fingerprint}";

    /// <summary>Wipes the key from memory.</summary>
    public void Dispose() => CryptographicOperations.ZeroMemory(_key);
}
