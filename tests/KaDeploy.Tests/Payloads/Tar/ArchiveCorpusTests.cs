using System.Diagnostics;
using KaDeploy.Cli;
using KaDeploy.Payloads;
using KaDeploy.Payloads.Image;
using KaDeploy.Payloads.Tar;
using KaDeploy.Protocol;
using KaDeploy.Tests.Session;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Payloads.Tar;

/// <summary>
/// The fixture tree of Corpus/make-fixture.sh (every entry type, non-UTF-8 names, binary xattrs and a capability,
/// access and default ACLs, sparse files, hard links), built once per run.
/// </summary>
public sealed class CorpusFixture : IDisposable
{
    public TempDirectory Dir { get; } = new("kad-corpus");
    public string Tree => Dir.Sub("tree");

    /// <summary>Why the corpus cannot run here, or null.</summary>
    public string? WhyNot { get; }

    public CorpusFixture()
    {
        if (!Environment.IsPrivilegedProcess)
        {
            WhyNot = "the corpus fixture needs root (device nodes, chown, trusted.* and security.capability xattrs)";
            return;
        }
        foreach (string tool in (string[])["tar", "bsdtar", "rsync", "setfacl", "setfattr", "gzip", "pigz", "zstd", "pzstd", "xz", "bzip2"])
        {
            if (ArchiveCorpusTests.Sh($"command -v {tool}").Code != 0)
            {
                WhyNot = $"{tool} is not installed (Debian: tar libarchive-tools rsync acl attr gzip pigz zstd xz-utils bzip2)";
                return;
            }
        }
        (int code, string output) = ArchiveCorpusTests.Sh($"'{ArchiveCorpusTests.RepoFile("tests/KaDeploy.Tests/Payloads/Tar/Corpus/make-fixture.sh")}' '{Tree}'");
        if (code != 0) WhyNot = "make-fixture.sh failed: " + output;
    }

    public void Dispose() => Dir.Dispose();
}

/// <summary>
/// Issue 12's corpus: the fixture archived by GNU tar in every --format (with --acls --xattrs and -S where the
/// format holds them), by bsdtar, and compressed by gzip, pigz, zstd, pzstd, xz and bzip2; each archive deployed
/// with --image to two nodes over a real loopback session and compared with rsync -aHAX --checksum against GNU
/// tar's (or bsdtar's) own extraction of the same archive: rsync must list nothing. The same fixture through
/// --source must arrive identical to the source, and GNU tar and bsdtar must read our own stream back exactly.
/// </summary>
public class ArchiveCorpusTests(CorpusFixture fixture) : IClassFixture<CorpusFixture>
{
    private const string TarAttrs = "--acls --xattrs --xattrs-include='*'";

    internal static (int Code, string Output) Sh(string script)
    {
        var psi = new ProcessStartInfo("bash") { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        using Process p = Process.Start(psi)!;
        Task<string> err = p.StandardError.ReadToEndAsync();
        string o = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, o + err.Result);
    }

    internal static string RepoFile(string relative)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            if (File.Exists(Path.Combine(d.FullName, "KaDeploy.slnx"))) return Path.Combine(d.FullName, relative);
        }
        throw new InvalidOperationException("repository root not found above " + AppContext.BaseDirectory);
    }

    private static void MustRun(string script)
    {
        (int code, string output) = Sh(script);
        Assert.True(code == 0, $"`{script}` exited {code}:\n{output}");
    }

    /// <summary>rsync's itemized differences (checksums, ACLs, xattrs, hard links, numeric owners, devices): empty when identical.</summary>
    internal static string RsyncDifferences(string expected, string actual)
    {
        (int code, string output) = Sh($"rsync -aHAX --checksum --numeric-ids --delete --dry-run --itemize-changes '{expected}/' '{actual}/'");
        Assert.True(code == 0, $"rsync failed ({code}): {output}");
        return output.Trim();
    }

    private async Task DeployAndCompareAsync(string image, string reference, string label, string[]? knownDifferences = null)
    {
        using var dir = new TempDirectory("kad-corpus-run");
        var source = ImageSource.Open(image);
        Assert.NotEqual(ImageFormat.RawDisk, source.Format);
        var (report, results) = await LoopbackSession.RunAsync(source, 2, 1,
            i => PayloadSelection.ClientSinks(dir.Sub($"node{i}"), null, null, force: false, assumeZeroed: false, TextWriter.Null),
            source.PreCompressedZstd ? WireCompression.Zstd : WireCompression.None, sourceIsZstd: source.PreCompressedZstd);
        Assert.True(report.Success, $"{label}: {report.Message}\n{report.FormatTable()}\n" + string.Join("\n", results.Select(r => r.Message)));
        for (int i = 0; i < 2; i++)
        {
            string diff = Without(RsyncDifferences(reference, dir.Sub($"node{i}")), knownDifferences);
            Assert.True(diff.Length == 0, $"{label}: node{i} differs from the reference extraction:\n{diff}");
        }
    }

    private static string Without(string rsyncOutput, string[]? known) =>
        known == null ? rsyncOutput : string.Join("\n", rsyncOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !known.Contains(l)));

    /// <summary>
    /// Where bsdtar's reader departs from GNU tar and from the source tree (README "Archive fidelity"): it leaves
    /// the target directory's own metadata ("./") alone, and it reads a negative fractional pax time "-S.F" as
    /// -S + .F (libarchive's pax_time, and its writer agrees) where POSIX and GNU tar read -(S.F): the fixture's
    /// rel-link (1969-07-20 20:17:40.5) is one second off in bsdtar's extraction of a pax archive.
    /// </summary>
    private static readonly string[] BsdtarReaderDepartures = [".d..t...... ./", ".L..t...... rel-link -> text.txt"];

    public static TheoryData<string, string> GnuFormats => new()
    {
        { "v7", "" },
        { "oldgnu", "-S" },
        { "gnu", "-S" },
        { "ustar", "" },
        { "posix", $"-S {TarAttrs}" },
        { "posix", $"-S --sparse-version=0.0 {TarAttrs}" },
        { "posix", $"-S --sparse-version=0.1 {TarAttrs}" },
        { "posix", $"-S --sparse-version=1.0 {TarAttrs}" },
    };

    [SkippableTheory]
    [MemberData(nameof(GnuFormats))]
    public async Task GnuTarArchiveDeploysExactlyAsGnuTarExtractsIt(string format, string options)
    {
        Skip.If(fixture.WhyNot is not null, fixture.WhyNot);
        using var dir = new TempDirectory("kad-corpus-gnu");
        string archive = dir.Sub("a.tar"), reference = dir.Sub("ref");
        // Formats that cannot hold everything (v7 names, ustar owners) make tar exit 2 with an archive of the
        // rest; that archive is the case under test.
        (int code, string output) = Sh($"tar -C '{fixture.Tree}' --format={format} {options} -cf '{archive}' .");
        Assert.True(code is 0 or 2 && File.Exists(archive), output);
        MustRun($"mkdir '{reference}' && tar -C '{reference}' --numeric-owner {(format == "posix" ? TarAttrs : "")} -xf '{archive}'");
        await DeployAndCompareAsync(archive, reference, $"GNU tar --format={format} {options}");
    }

    public static TheoryData<string> BsdtarFormats => new() { "pax", "ustar", "gnutar", "default" };

    /// <summary>
    /// bsdtar's archives, compared with bsdtar's own extraction (less <see cref="BsdtarReaderDepartures"/>). Not
    /// with GNU tar's: GNU tar 1.34 restores a directory's mtime when the archive leaves it, and bsdtar lists hard
    /// links after other directories, so GNU tar's copy of hl/ and acl-dir/ has the wrong mtime (the source's is
    /// the one we restore).
    /// </summary>
    [SkippableTheory]
    [MemberData(nameof(BsdtarFormats))]
    public async Task BsdtarArchiveDeploysExactlyAsBsdtarExtractsIt(string format)
    {
        Skip.If(fixture.WhyNot is not null, fixture.WhyNot);
        using var dir = new TempDirectory("kad-corpus-bsd");
        string archive = dir.Sub("a.tar"), reference = dir.Sub("ref");
        string formatOption = format == "default" ? "" : $"--format={format}";
        (int code, string output) = Sh($"bsdtar -C '{fixture.Tree}' {formatOption} --acls --xattrs --read-sparse -cf '{archive}' .");
        Assert.True(File.Exists(archive) && new FileInfo(archive).Length > 0, output);
        MustRun($"mkdir '{reference}' && bsdtar -C '{reference}' --numeric-owner --acls --xattrs -xpf '{archive}'");
        await DeployAndCompareAsync(archive, reference, $"bsdtar {formatOption}", BsdtarReaderDepartures);
    }

    public static TheoryData<string> Compressors => new() { "gzip", "pigz", "gzip-multi-member", "zstd", "pzstd", "xz", "bzip2" };

    [SkippableTheory]
    [MemberData(nameof(Compressors))]
    public async Task CompressedArchiveDeploysExactly(string compressor)
    {
        Skip.If(fixture.WhyNot is not null, fixture.WhyNot);
        using var dir = new TempDirectory("kad-corpus-z");
        string tar = dir.Sub("a.tar"), packed = dir.Sub("a.tar.z"), reference = dir.Sub("ref");
        MustRun($"tar -C '{fixture.Tree}' --format=posix -S {TarAttrs} -cf '{tar}' .");
        MustRun(compressor switch
        {
            "gzip" => $"gzip -c '{tar}' > '{packed}'",
            "pigz" => $"pigz -p 2 -b 128 -c '{tar}' > '{packed}'",
            // Two members, cut in the middle of an entry: what concatenated .tgz files and some tools produce.
            "gzip-multi-member" => $"head -c 700001 '{tar}' | gzip -c > '{packed}' && tail -c +700002 '{tar}' | gzip -c >> '{packed}'",
            "zstd" => $"zstd -q -c '{tar}' > '{packed}'",
            // pzstd writes several frames, each behind a skippable frame (magic 0x184D2A50).
            "pzstd" => $"pzstd -q -p 2 -c '{tar}' > '{packed}'",
            "xz" => $"xz -c '{tar}' > '{packed}'",
            _ => $"bzip2 -c '{tar}' > '{packed}'",
        });
        if (compressor == "pzstd") Assert.Equal(0x50, File.ReadAllBytes(packed)[0]); // really starts with a skippable frame
        if (compressor == "gzip-multi-member")
        {
            long first = long.Parse(Sh($"head -c 700001 '{tar}' | gzip -c | wc -c").Output.Trim());
            Assert.Equal(0x1F, File.ReadAllBytes(packed)[first]); // a second member starts there
        }
        MustRun($"mkdir '{reference}' && tar -C '{reference}' --numeric-owner {TarAttrs} -xf '{tar}'");
        await DeployAndCompareAsync(packed, reference, compressor);
    }

    [SkippableFact]
    public async Task SourceTreeArrivesIdenticalToTheSource()
    {
        Skip.If(fixture.WhyNot is not null, fixture.WhyNot);
        using var dir = new TempDirectory("kad-corpus-src");
        var warnings = new List<string>();
        var (report, results) = await LoopbackSession.RunAsync(new TarTreeSource(new TarTreeSourceOptions { Root = fixture.Tree, Warn = warnings.Add }), 2, 1,
            i => PayloadSelection.ClientSinks(dir.Sub($"node{i}"), null, null, force: false, assumeZeroed: false, TextWriter.Null));
        Assert.True(report.Success, report.Message + "\n" + string.Join("\n", results.Select(r => r.Message)));
        Assert.Empty(warnings);
        for (int i = 0; i < 2; i++)
        {
            string diff = RsyncDifferences(fixture.Tree, dir.Sub($"node{i}"));
            Assert.True(diff.Length == 0, $"node{i} differs from the source:\n{diff}");
        }
    }

    [SkippableTheory]
    [InlineData("tar", "--numeric-owner --acls --xattrs --xattrs-include='*' -xf")]
    [InlineData("bsdtar", "--numeric-owner --acls --xattrs -xpf")]
    public async Task OurStreamIsReadBackExactlyByOtherTools(string tool, string extract)
    {
        Skip.If(fixture.WhyNot is not null, fixture.WhyNot);
        using var dir = new TempDirectory("kad-corpus-back");
        string archive = dir.Sub("ours.tar"), target = dir.Sub("out");
        await using (var f = File.Create(archive))
        {
            await new TarTreeSource(new TarTreeSourceOptions { Root = fixture.Tree }).WriteToAsync(f, default);
        }
        MustRun($"mkdir '{target}' && {tool} -C '{target}' {extract} '{archive}'");
        string diff = Without(RsyncDifferences(fixture.Tree, target), tool == "bsdtar" ? BsdtarReaderDepartures : null);
        Assert.True(diff.Length == 0, $"{tool}'s extraction of our stream differs from the source:\n{diff}");
    }
}
