using System.Diagnostics;
using KaDeploy.Netboot;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Netboot;

[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public class CpioWriterTests
{
    [Fact]
    public void HeaderFieldsAndPaddingFollowNewc()
    {
        var ms = new MemoryStream();
        var w = new CpioWriter(ms);
        w.AddFile("init", "abc"u8, 0x1ED);
        w.Finish();
        byte[] a = ms.ToArray();
        string header = System.Text.Encoding.ASCII.GetString(a, 0, 110);
        Assert.Equal("070701", header[..6]);
        Assert.Equal("000081ED", header[14..22]);   // regular file, 0755
        Assert.Equal("00000003", header[54..62]);   // file size
        Assert.Equal("00000005", header[94..102]);  // name size with its NUL
        // 110 + "init\0" = 115, padded to 116; data 3 padded to 4; then the trailer.
        Assert.Equal((byte)'a', a[116]);
        Assert.Equal("070701", System.Text.Encoding.ASCII.GetString(a, 120, 6));
        Assert.Equal(0, a.Length % 4);
    }

    [SkippableFact]
    public void GnuCpioReadsTheArchiveBack()
    {
        Skip.If(!File.Exists("/usr/bin/cpio") && !File.Exists("/bin/cpio"), "cpio not installed (apt-get install cpio)");
        using var dir = new TempDirectory("cpio");
        Directory.CreateDirectory(dir.Sub("src/etc"));
        File.WriteAllText(dir.Sub("src/etc/five"), "12345");
        File.WriteAllText(dir.Sub("src/run"), "#!/bin/sh\n");
        File.SetUnixFileMode(dir.Sub("src/run"), (UnixFileMode)0x1ED);
        File.CreateSymbolicLink(dir.Sub("src/link"), "etc/five");
        using (var f = File.Create(dir.Sub("a.cpio")))
        {
            var w = new CpioWriter(f);
            w.AddTree(dir.Sub("src"));
            w.Finish();
        }
        Directory.CreateDirectory(dir.Sub("out"));
        var p = Process.Start(new ProcessStartInfo("sh", ["-c", $"cpio -i --quiet --make-directories < {dir.Sub("a.cpio")}"]) { WorkingDirectory = dir.Sub("out"), RedirectStandardError = true })!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, err);
        Assert.Equal("12345", File.ReadAllText(dir.Sub("out/etc/five")));
        Assert.Equal((UnixFileMode)0x1ED, File.GetUnixFileMode(dir.Sub("out/run")) & (UnixFileMode)0xFFF);
        Assert.Equal("etc/five", new FileInfo(dir.Sub("out/link")).LinkTarget);
    }
}
