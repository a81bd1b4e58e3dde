using KaDeploy.Security;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Security;

[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public class PresharedKeyTests
{
    [Fact]
    public void Keygen_writes_a_private_file_that_loads_back()
    {
        using var dir = new TempDirectory();
        var path = dir.File("cluster.key");
        string fingerprint = PresharedKey.WriteNewKeyFile(path);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        using var key = PresharedKey.LoadFile(path);
        Assert.Equal(fingerprint, key.Fingerprint);
        Assert.Equal(PresharedKey.Size, key.Bytes.Length);
    }

    [Fact]
    public void Keygen_never_overwrites()
    {
        using var dir = new TempDirectory();
        var path = dir.File("k");
        File.WriteAllText(path, "precious");
        Assert.Contains("cannot create", Assert.Throws<KaDeployException>(() => PresharedKey.WriteNewKeyFile(path)).Message);
        Assert.Equal("precious", File.ReadAllText(path));
    }

    [Theory]
    [InlineData(UnixFileMode.GroupRead)]
    [InlineData(UnixFileMode.OtherRead)]
    [InlineData(UnixFileMode.GroupWrite)]
    [InlineData(UnixFileMode.OtherWrite)]
    public void A_key_file_open_to_group_or_others_is_refused(UnixFileMode extra)
    {
        using var dir = new TempDirectory();
        var path = dir.File("k");
        PresharedKey.WriteNewKeyFile(path);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | extra);
        var e = Assert.Throws<KaDeployException>(() => PresharedKey.LoadFile(path));
        Assert.Contains("chmod 600", e.Message);
    }

    [Fact]
    public void Malformed_key_files_are_refused_without_echoing_their_content()
    {
        using var dir = new TempDirectory();
        var path = dir.File("k");
        foreach (var text in new[] { "", "# only a comment\n", "c2hvcnQ=\n", "not base64 at all!\n", Convert.ToBase64String(new byte[32]) + "\n" + Convert.ToBase64String(new byte[32]) })
        {
            File.Delete(path);
            File.WriteAllText(path, text);
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            var e = Assert.Throws<KaDeployException>(() => PresharedKey.LoadFile(path));
            Assert.Contains(path, e.Message);
            if (text.Length > 12) Assert.DoesNotContain(text.Trim()[..12], e.Message);
        }
    }

    [Fact]
    public void Kernel_command_line_carries_the_same_key()
    {
        using var key = PresharedKey.Generate();
        var b64 = Convert.ToBase64String(key.Bytes);
        using var fromCmdline = PresharedKey.FromKernelCommandLine($"BOOT_IMAGE=/vmlinuz root=/dev/nfs ka.key={b64} quiet\n");
        Assert.Equal(key.Fingerprint, fromCmdline.Fingerprint);
        Assert.Throws<KaDeployException>(() => PresharedKey.FromKernelCommandLine("quiet splash"));
    }

    [Fact]
    public void Neither_ToString_nor_the_fingerprint_reveal_the_key()
    {
        using var key = PresharedKey.Generate();
        var b64 = Convert.ToBase64String(key.Bytes);
        var hex = Convert.ToHexStringLower(key.Bytes);
        Assert.DoesNotContain(b64[..10], key.ToString());
        Assert.DoesNotContain(hex[..12], key.ToString() + key.Fingerprint);
    }
}
