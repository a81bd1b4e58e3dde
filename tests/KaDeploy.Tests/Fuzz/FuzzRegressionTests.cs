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
        // CsCheck found this (seed 7LpYqfJqzqu1): the old extractor cast every device entry to PosixTarEntry,
        // and an InvalidCastException escaped instead of a one-line refusal. The byte-level reader reads the
        // device numbers where GNU tar does (0,0 here): the entry is created, or refused with one line where
        // this process may not make devices; never anything else.
        using var dir = new TempDirectory();
        var archive = new MemoryStream([.. V7Header("dev", type), .. new byte[1024]]);
        var sink = new TarTreeSink(new TarTreeSinkOptions { Target = dir.Path, Force = true, PreserveOwnership = false });
        var e = await Record.ExceptionAsync(() => sink.ConsumeAsync(archive, default));
        if (e is null)
        {
            var kind = KaDeploy.Platform.Posix.TryLStat(System.IO.Path.Combine(dir.Path, "dev"), out var st, out _) ? st.Kind : default;
            Assert.Equal(type switch { '3' => KaDeploy.Platform.FileKind.CharDevice, '4' => KaDeploy.Platform.FileKind.BlockDevice, _ => KaDeploy.Platform.FileKind.Fifo }, kind);
        }
        else
        {
            Assert.IsType<KaDeployException>(e);
        }
    }

    [Fact]
    public void The_fuzz_target_treats_it_as_a_clean_refusal()
    {
        FuzzTargets.TarExtract([.. V7Header("dev", '3'), .. new byte[1024]]);
    }

    [Theory]
    [InlineData("table gpt\nbios_grub 12222222222222222222222 /bl\n")] // AFL, 30 s run in the CI budget: an OverflowException escaped
    [InlineData("linux 99999999999999999999T /\n")]
    public void An_absurd_layout_size_is_a_one_line_refusal(string layout)
    {
        var e = Assert.Throws<KaDeployException>(() => KaDeploy.Install.LayoutFile.Parse(layout));
        Assert.Contains("larger than any disk", e.Message);
    }
}

/// <summary>AFL's saved inputs (fuzz/README.md), replayed through their targets on every run.</summary>
public class AflFindingsTests
{
    public static TheoryData<string> Files => new(Directory.GetFiles(Path.Combine(AppContext.BaseDirectory, "Fuzz", "Findings")).Select(Path.GetFileName)!);

    [Theory]
    [MemberData(nameof(Files))]
    public void Saved_crash_is_now_accepted_or_refused_cleanly(string file)
    {
        string target = file.Split('-')[0];
        FuzzTargets.All[target](File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Fuzz", "Findings", file)));
    }
}
