using KaDeploy.Protocol;
using KaDeploy.Security;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Security;

/// <summary>
/// The server's choice of stream cipher travels in the sealed Plan: an attacker on the wire cannot turn AEGIS-256
/// into something else without breaking the control frame's tag. And the libsodium that runs AEGIS is the one
/// shipped beside the binary, never the distribution's (Debian 12: 1.0.18, no AEGIS).
/// </summary>
public class CipherChoiceTests
{
    private static Plan AegisPlan() => new(3, 1, "198.18.0.2", 30766, [4], KaDeploy.Payloads.PayloadKind.Tar, WireCompression.None, 1000,
        new byte[16], DigestAlgorithm.Sha256, new byte[StreamCipher.KeySize], 7, StreamCipherKind.Aegis256);

    /// <summary>The Plan as the server's control channel writes it: sealed when <paramref name="sender"/> is given.</summary>
    private static async Task<byte[]> Wire(ControlCipher? sender)
    {
        var sink = new MemoryStream();
        await new ControlChannel(sink, sender).SendAsync(AegisPlan(), default);
        return sink.ToArray();
    }

    private static async Task<ControlMessage?> Read(byte[] wire, ControlCipher? receiver) =>
        await new ControlChannel(new MemoryStream(wire), receiver).ReceiveAsync(default);

    private static async Task<(ControlCipher Server, ControlCipher Node)> Keyed(PresharedKey key)
    {
        var (o, a) = InMemoryConnection.Create();
        var node = Handshake.OpenAsync(o, HandshakeChannel.Control, "s", key, "server", default);
        var server = await Handshake.AcceptAsync(a, key, "s", "node", default);
        return (server.Cipher!, (await node).Cipher!);
    }

    // The cipher is the Plan's last field, so its byte is the last plaintext byte of the frame (before the tag).
    private static void Downgrade(byte[] wire, int tag) => wire[^(tag + 1)] ^= (byte)StreamCipherKind.Aegis256 ^ (byte)StreamCipherKind.Aes256Gcm;

    [Fact]
    public async Task The_plans_cipher_reaches_the_node()
    {
        using var key = PresharedKey.Generate();
        var (server, node) = await Keyed(key);
        var plan = Assert.IsType<Plan>(await Read(await Wire(server), node));
        Assert.Equal(StreamCipherKind.Aegis256, plan.Cipher);
    }

    [Fact]
    public async Task A_downgrade_of_the_cipher_on_the_wire_is_refused()
    {
        // Control: in a clear channel the same flip does turn AEGIS-256 into AES-256-GCM, so it hits the cipher field.
        var clear = await Wire(null);
        Downgrade(clear, 0);
        Assert.Equal(StreamCipherKind.Aes256Gcm, Assert.IsType<Plan>(await Read(clear, null)).Cipher);

        // Sealed: AES-GCM's ciphertext flips as its plaintext would (a stream cipher), but the tag no longer matches.
        using var key = PresharedKey.Generate();
        var (server, node) = await Keyed(key);
        var wire = await Wire(server);
        Downgrade(wire, ControlCipher.TagSize);
        var e = await Assert.ThrowsAsync<ProtocolException>(() => Read(wire, node));
        Assert.Contains("failed authentication", e.Message);
    }

    [Fact]
    public void The_shipped_libsodium_is_loaded_not_the_systems()
    {
        var library = Libsodium.Load(out string why);
        Assert.True(library is not null, why);
        Assert.Equal("1.0.22", library!.Version);
        Assert.StartsWith(AppContext.BaseDirectory, library.Path);
        Assert.Contains(File.ReadLines("/proc/self/maps"), l => l.EndsWith(library.Path, StringComparison.Ordinal));
        Assert.True(StreamCipher.IsAvailable(StreamCipherKind.Aegis256, out _));
    }

    [Fact]
    public void No_libsodium_is_named_in_one_line()
    {
        var (library, why) = Libsodium.TryLoad(["/nonexistent/a/libsodium.so", "/nonexistent/b/libsodium.so"]);
        Assert.Null(library);
        Assert.Equal("libsodium >= 1.0.19 with AEGIS not found beside ka-deploy (looked for /nonexistent/a/libsodium.so, /nonexistent/b/libsodium.so)", why);
    }

    [SkippableFact]
    public void A_libsodium_without_aegis_is_refused_with_its_version()
    {
        const string Debian = "/usr/lib/x86_64-linux-gnu/libsodium.so.23"; // Debian 12's libsodium23 (1.0.18)
        Skip.IfNot(File.Exists(Debian), "libsodium23 not installed");
        var (library, why) = Libsodium.TryLoad([Debian]);
        Assert.Null(library);
        Assert.Equal($"{Debian} is libsodium 1.0.18, without AEGIS (libsodium >= 1.0.19 needed)", why);
    }

    [Fact]
    public void A_file_that_is_no_library_is_refused()
    {
        string path = Path.Combine(Path.GetTempPath(), $"kd-not-a-lib-{Environment.ProcessId}.so");
        File.WriteAllText(path, "not an ELF file");
        try
        {
            var (library, why) = Libsodium.TryLoad([path]);
            Assert.Null(library);
            Assert.StartsWith($"{path} could not be loaded", why);
        }
        finally { File.Delete(path); }
    }
}
