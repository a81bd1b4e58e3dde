using System.Text;
using KaDeploy.Fuzz;
using KaDeploy.Payloads.Tar;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Fuzz;

/// <summary>Every crash or hang the fuzzers found, kept as a test (fuzz/README.md lists them).</summary>
public class FuzzRegressionTests
{
    /// <summary>A 512-byte V7 tar header (no "ustar" magic) with a valid checksum.</summary>
    private static byte[] V7Header(string name, char type)
    {
        var h = new byte[512];
        Encoding.ASCII.GetBytes(name).CopyTo(h, 0);
        Encoding.ASCII.GetBytes("0000644\0").CopyTo(h, 100);
        Encoding.ASCII.GetBytes("0000000\0").CopyTo(h, 108);
        Encoding.ASCII.GetBytes("0000000\0").CopyTo(h, 116);
        Encoding.ASCII.GetBytes("00000000000\0").CopyTo(h, 124);
        Encoding.ASCII.GetBytes("00000000000\0").CopyTo(h, 136);
        h[156] = (byte)type;
        for (int i = 148; i < 156; i++) h[i] = (byte)' ';
        int sum = h.Sum(b => b);
        Encoding.ASCII.GetBytes(Convert.ToString(sum, 8).PadLeft(6, '0') + "\0 ").CopyTo(h, 148);
        return h;
    }

    [Theory]
    [InlineData('3')] // character device
    [InlineData('4')] // block device
    [InlineData('6')] // FIFO
    public async Task V7_device_or_fifo_entry_is_extracted_or_refused_not_a_crash(char type)
    {
        // CsCheck found this (seed 7LpYqfJqzqu1): the extractor cast every device entry to PosixTarEntry,
        // and an InvalidCastException escaped instead of a one-line refusal. (The byte-level sink that
        // replaced it reads V7 device headers itself; either outcome is fine, another exception is not.)
        using var dir = new TempDirectory();
        var archive = new MemoryStream([.. V7Header("dev", type), .. new byte[1024]]);
        var sink = new TarTreeSink(new TarTreeSinkOptions { Target = dir.Path, Force = true, PreserveOwnership = false });
        try { await sink.ConsumeAsync(archive, default); }
        catch (KaDeployException) { }
    }

    [Fact]
    public void The_fuzz_target_treats_it_as_a_clean_refusal()
    {
        FuzzTargets.TarExtract([.. V7Header("dev", '3'), .. new byte[1024]]);
    }
}
