using KaDeploy.Cli;
using KaDeploy.Payloads.Image;
using KaDeploy.Payloads.Tar;
using KaDeploy.Platform;
using KaDeploy.Tests.Session;
using KaDeploy.Tests.TestSupport;
using static KaDeploy.Tests.Payloads.Tar.RawTar;

namespace KaDeploy.Tests.Payloads.Tar;

/// <summary>
/// One test per case of issue 12: each reproduces what another tool writes (or what a real tree holds) and
/// checks the extraction byte for byte: names, data, xattrs, ACLs, holes, times.
/// </summary>
public class ArchiveFidelityTests : IDisposable
{
    private readonly TempDirectory _dir = new("kad-fidelity");

    public void Dispose() => _dir.Dispose();

    private string Target => _dir.Sub("t");

    private async Task<TarExtractionSummary> ExtractAsync(byte[] archive, List<string>? warnings = null)
    {
        var sink = new TarTreeSink(new TarTreeSinkOptions { Target = Target, Warn = warnings == null ? null : warnings.Add });
        sink.EnsureTargetUsable();
        await sink.ConsumeAsync(new MemoryStream(archive), default);
        return sink.Summary;
    }

    private async Task<string> RefusedAsync(byte[] archive) =>
        (await Assert.ThrowsAsync<KaDeployException>(() => ExtractAsync(archive))).Message;

    private List<byte[]> Names(string dir = "")
    {
        int fd = PosixAt.OpenDirectoryPath(B(Path.Combine(Target, dir)), followFinal: false, out int errno);
        Assert.True(fd >= 0, LinuxNative.StrError(errno));
        return PosixAt.ReadDirectory(fd, out _)!.OrderBy(n => Convert.ToHexString(n)).ToList();
    }

    private byte[] Read(byte[] relative)
    {
        using var fd = PosixAt.OpenRead(LinuxNative.AT_FDCWD, [.. B(Target + "/"), .. relative], out int errno);
        Assert.True(fd != null, LinuxNative.StrError(errno));
        var buf = new byte[RandomAccess.GetLength(fd)];
        RandomAccess.Read(fd, buf, 0);
        return buf;
    }

    private static readonly byte[] Koi1 = [(byte)'k', (byte)'o', (byte)'i', 0xF0, 0xF2, (byte)'n', (byte)'a', (byte)'m', (byte)'e'];
    private static readonly byte[] Koi2 = [(byte)'k', (byte)'o', (byte)'i', 0xD0, 0xD2, (byte)'n', (byte)'a', (byte)'m', (byte)'e'];

    [Fact]
    public async Task NonUtf8NamesInATreeAreSentAndNotSkipped()
    {
        string src = _dir.Sub("src");
        Directory.CreateDirectory(src);
        foreach ((byte[] name, string text) in new[] { (Koi1, "first"), (Koi2, "second") })
        {
            using var f = PosixAt.CreateFile(LinuxNative.AT_FDCWD, [.. B(src + "/"), .. name], 0x1A4, out int errno);
            Assert.True(f != null, LinuxNative.StrError(errno));
            RandomAccess.Write(f, B(text), 0);
        }
        var warnings = new List<string>();
        var ms = new MemoryStream();
        await new TarTreeSource(new TarTreeSourceOptions { Root = src, Warn = warnings.Add }).WriteToAsync(ms, default);
        ms.Position = 0;
        await ExtractAsync(ms.ToArray());
        Assert.Empty(warnings);
        Assert.Equal(2, Names().Count);
        Assert.Equal(B("first"), Read(Koi1));
        Assert.Equal(B("second"), Read(Koi2));
    }

    [Theory]
    [InlineData("ustar")]
    [InlineData("gnu")]
    [InlineData("pax")]
    public async Task NonUtf8NamesInAnArchiveStayDistinct(string format)
    {
        var tar = new RawTar();
        foreach ((byte[] name, string text) in new[] { (Koi1, "first"), (Koi2, "second") })
        {
            if (format == "pax") tar.Pax('x', ("path", name), ("hdrcharset", B("BINARY")));
            tar.Header(format == "pax" ? B("placeholder") : name, '0', text.Length, format: format == "gnu" ? "gnu" : "ustar").Data(B(text));
        }
        await ExtractAsync(tar.End());
        Assert.Equal(2, Names().Count);
        Assert.Equal(B("first"), Read(Koi1));
        Assert.Equal(B("second"), Read(Koi2));
    }

    [Fact]
    public async Task V7DirectoryStoredAsARegularEntryWithASizeIsADirectory()
    {
        // As in libarchive's test_compat_tar_directory_1: "directory1/" of type '\0' and size 1, no data block.
        byte[] archive = new RawTar()
            .Header(B("directory1/"), '\0', size: 1, mode: "0000755", format: "v7")
            .Header(B("directory2/"), '\0', size: 1, mode: "0000755", format: "v7")
            .Header(B("directory2/file"), '\0', size: 5, format: "v7").Data(B("hello"))
            .End();
        await ExtractAsync(archive);
        Assert.True(Directory.Exists(Path.Combine(Target, "directory1")));
        Assert.True(Directory.Exists(Path.Combine(Target, "directory2")));
        Assert.Equal("hello", File.ReadAllText(Path.Combine(Target, "directory2/file")));
    }

    [SkippableFact]
    public async Task GnuTarAclWithNewlinesInsideTheValueIsApplied()
    {
        Skip.IfNot(Environment.IsPrivilegedProcess, "setting ACLs naming other users needs root");
        byte[] archive = new RawTar()
            .Pax('x', ("SCHILY.acl.access", B("user::rw-\nuser:1234:rw-\t#effective:r--\ngroup::r--\ngroup:2345:r--\nmask::rw-\nother::r--\n")))
            .Header(B("f"), '0', 2, mode: "0000664").Data(B("x\n"))
            .Pax('x', ("SCHILY.acl.access", B("user::rwx\ngroup::r-x\nmask::rwx\nother::r-x\n")), ("SCHILY.acl.default", B("user::rwx\nuser:1234:r-x\ngroup::r-x\nmask::r-x\nother::---\n")))
            .Header(B("d/"), '5', mode: "0000775")
            .End();
        await ExtractAsync(archive);
        string acl = TempDirectory.RunCapture("getfacl", "-n", "-p", Path.Combine(Target, "f")).Output;
        Assert.Contains("user:1234:rw-", acl);
        Assert.Contains("group:2345:r--", acl);
        string dacl = TempDirectory.RunCapture("getfacl", "-n", "-p", "-d", Path.Combine(Target, "d")).Output;
        Assert.Contains("user:1234:r-x", dacl);
        Assert.Equal(0x1FDu, Posix.LStat(Path.Combine(Target, "d")).Permissions);
    }

    [SkippableFact]
    public async Task StarAclWithANameAndANumericIdIsApplied()
    {
        Skip.IfNot(Environment.IsPrivilegedProcess, "setting ACLs naming other users needs root");
        byte[] archive = new RawTar()
            .Pax('x', ("SCHILY.acl.access", B("user::rw-,user:no-such-user-here:r--:4321,group::r--,mask::r--,other::---")))
            .Header(B("f"), '0', 0, mode: "0000640")
            .End();
        await ExtractAsync(archive);
        Assert.Contains("user:4321:r--", TempDirectory.RunCapture("getfacl", "-n", "-p", Path.Combine(Target, "f")).Output);
    }

    [SkippableFact]
    public async Task BinaryXattrValuesAreSetByteExact()
    {
        Skip.IfNot(Environment.IsPrivilegedProcess, "security.capability needs root");
        byte[] capability = Convert.FromHexString("0100000280040000000000000000000000000000"); // cap_setuid: a byte 0x80
        byte[] binary = [0x00, 0xFF, 0x80, 0xFE, 0x0A, 0x3D];
        byte[] archive = new RawTar()
            .Pax('x', ("SCHILY.xattr.security.capability", capability), ("SCHILY.xattr.user.bin", binary),
                ("LIBARCHIVE.xattr.user.b64", B("AP+A/go9")), ("RHT.security.selinux", B("")))
            .Header(B("f"), '0', 0, mode: "0000755")
            .End();
        await ExtractAsync(archive);
        byte[] path = B(Path.Combine(Target, "f"));
        Assert.Equal(capability, PosixAt.GetXattr(path, B("security.capability"), out _));
        Assert.Equal(binary, PosixAt.GetXattr(path, B("user.bin"), out _));
        Assert.Equal(binary, PosixAt.GetXattr(path, B("user.b64"), out _));
    }

    [SkippableTheory]
    [InlineData("gnu", "")]            // old GNU 'S' entries, GNU tar's default for -S
    [InlineData("oldgnu", "")]
    [InlineData("posix", "--sparse-version=0.0")]
    [InlineData("posix", "--sparse-version=0.1")]
    [InlineData("posix", "--sparse-version=1.0")]
    public async Task GnuSparseFilesOfEveryVersionAreExtractedWithTheirHoles(string format, string version)
    {
        string src = _dir.Sub("src");
        Directory.CreateDirectory(src);
        string sparse = Path.Combine(src, "sparse.img");
        var data = new byte[12 << 20];
        var rng = new Random(7);
        // Enough segments to need old-GNU extension blocks (more than 4 in the header).
        for (int i = 0; i < 9; i++) rng.NextBytes(data.AsSpan((i + 1) << 20, 5000));
        await using (var f = File.Create(sparse))
        {
            for (int i = 0; i < 9; i++) { f.Position = (i + 1) << 20; f.Write(data.AsSpan((i + 1) << 20, 5000)); }
            f.SetLength(data.Length);
        }
        string archive = _dir.Sub("s.tar");
        (int code, string output) = ArchiveCorpusTests.Sh($"tar -C '{src}' --format={format} -S {version} -cf '{archive}' sparse.img");
        Skip.If(code != 0, "GNU tar could not write the case: " + output);
        await ExtractAsync(File.ReadAllBytes(archive));
        string copy = Path.Combine(Target, "sparse.img");
        Assert.Equal(data, File.ReadAllBytes(copy));
        Assert.True(Posix.LStat(copy).Blocks * 512 < 2 << 20, "holes were written as data");
    }

    [Fact]
    public async Task HardLinkWithASizeInAUstarArchiveIsALinkAndItsSizeIsNotData()
    {
        // Old ustar writers put the target's size on the link entry with no data after it.
        byte[] archive = new RawTar()
            .Header(B("a"), '0', 5).Data(B("hello"))
            .Header(B("b"), '1', size: 5, link: B("a"))
            .Header(B("c"), '0', 3).Data(B("bye"))
            .End();
        await ExtractAsync(archive);
        Assert.Equal(Posix.LStat(Path.Combine(Target, "a")).Inode, Posix.LStat(Path.Combine(Target, "b")).Inode);
        Assert.Equal("bye", File.ReadAllText(Path.Combine(Target, "c")));
    }

    [Fact]
    public async Task HardLinkWithDataInAPaxArchiveSkipsTheData()
    {
        byte[] archive = new RawTar()
            .Header(B("a"), '0', 5).Data(B("hello"))
            .Pax('x', ("mtime", B("1.5")))
            .Header(B("b"), '1', size: 5, link: B("a")).Data(B("hello"))
            .Header(B("c"), '0', 3).Data(B("bye"))
            .End();
        await ExtractAsync(archive);
        Assert.Equal(Posix.LStat(Path.Combine(Target, "a")).Inode, Posix.LStat(Path.Combine(Target, "b")).Inode);
        Assert.Equal("bye", File.ReadAllText(Path.Combine(Target, "c")));
    }

    [Theory]
    [InlineData("-2147472000", -2147472000L, 0u)]         // 1901-12-14
    [InlineData("-1.5", -2L, 500_000_000u)]               // POSIX: -(1.5), as GNU tar reads it
    [InlineData("1234567890.123456789", 1234567890L, 123456789u)]
    public async Task NegativeAndFractionalPaxTimesAreKept(string mtime, long sec, uint nsec)
    {
        byte[] archive = new RawTar().Pax('x', ("mtime", B(mtime))).Header(B("f"), '0', 0).End();
        await ExtractAsync(archive);
        FileStatus st = Posix.LStat(Path.Combine(Target, "f"));
        Assert.Equal((sec, nsec), (st.MtimeSec, st.MtimeNsec));
    }

    [Fact]
    public async Task NegativeBase256MtimeInAGnuHeaderIsKept()
    {
        // GNU tar --format=gnu stores times before 1970 in base-256, two's complement.
        byte[] archive = new RawTar().Header(B("f"), '0', 0, format: "gnu", tweak: h =>
        {
            long v = -2147472000;
            h[136] = 0xFF;
            for (int i = 11; i >= 1; i--) { h[136 + i] = (byte)v; v >>= 8; }
        }).End();
        await ExtractAsync(archive);
        Assert.Equal(-2147472000L, Posix.LStat(Path.Combine(Target, "f")).MtimeSec);
    }

    [Fact]
    public async Task PlexusArchiverHeadersAreRead()
    {
        // Maven's plexus-archiver: ustar magic with version "\0\0", uid and gid fields of spaces.
        byte[] archive = new RawTar()
            .Header(B("dir/"), '5', mode: "0000755", uid: "       ", gid: "       ", format: "plexus")
            .Header(B("dir/file"), '0', 4, uid: "       ", gid: "       ", format: "plexus").Data(B("data"))
            .End();
        await ExtractAsync(archive);
        Assert.Equal("data", File.ReadAllText(Path.Combine(Target, "dir/file")));
        if (Environment.IsPrivilegedProcess) Assert.Equal(0u, Posix.LStat(Path.Combine(Target, "dir/file")).Uid);
    }

    [Fact]
    public async Task GnuLongNamesAndLinksAreBytes()
    {
        byte[] longName = [.. Enumerable.Repeat((byte)'n', 150), 0xFF];
        byte[] longLink = [.. Enumerable.Repeat((byte)'l', 150), 0xFE];
        byte[] archive = new RawTar()
            .Header(B("././@LongLink"), 'L', longName.Length + 1, format: "gnu").Data([.. longName, 0])
            .Header(B("././@LongLink"), 'K', longLink.Length, format: "gnu").Data(longLink)
            .Header(longName[..100], '2', format: "gnu")
            .End();
        await ExtractAsync(archive);
        Assert.Equal(longLink, PosixAt.ReadLink(LinuxNative.AT_FDCWD, [.. B(Target + "/"), .. longName], out _));
    }

    [Fact]
    public async Task GlobalPaxRecordsApplyUntilOverridden()
    {
        byte[] archive = new RawTar()
            .Pax('g', ("mtime", B("1000.25")))
            .Header(B("a"), '0', 0)
            .Pax('x', ("mtime", B("2000")))
            .Header(B("b"), '0', 0)
            .End();
        await ExtractAsync(archive);
        Assert.Equal((1000L, 250_000_000u), (Posix.LStat(Path.Combine(Target, "a")).MtimeSec, Posix.LStat(Path.Combine(Target, "a")).MtimeNsec));
        Assert.Equal(2000L, Posix.LStat(Path.Combine(Target, "b")).MtimeSec);
    }

    [Fact]
    public async Task AHeaderThatDoesNotCheckOutStopsTheExtractionWithItsOffset()
    {
        byte[] archive = new RawTar().Header(B("a"), '0', 5).Data(B("hello")).Header(B("b"), '0', 0).End();
        archive[1024 + 10] ^= 0x40; // corrupt the second header after its checksum was computed
        string msg = await RefusedAsync(archive);
        Assert.Contains("at byte 1024", msg);
        Assert.Contains("checksum", msg);
    }

    [Theory]
    [InlineData('A', "Solaris ACL")]
    [InlineData('M', "multi-volume")]
    [InlineData('Z', "unknown entry type 'Z'")]
    public async Task EntryTypesThatCannotBeReproducedAreRefusedByName(char type, string why)
    {
        string msg = await RefusedAsync(new RawTar().Header(B("odd-entry"), type, 0).End());
        Assert.Contains("'odd-entry'", msg);
        Assert.Contains(why, msg);
    }

    [Fact]
    public async Task AnXattrTheTargetRefusesFailsTheEntryInsteadOfAWarning()
    {
        byte[] archive = new RawTar().Pax('x', ("SCHILY.xattr.bogusnamespace.x", B("v"))).Header(B("f"), '0', 0).End();
        string msg = await RefusedAsync(archive);
        Assert.Contains("'f'", msg);
        Assert.Contains("bogusnamespace.x", msg);
    }

    [Fact]
    public async Task AnEntryThatCannotBeCreatedFailsTheNodeWithItsNameNotVerified()
    {
        string image = _dir.Sub("bad.tar");
        File.WriteAllBytes(image, new RawTar()
            .Header(B("good"), '0', 2).Data(B("ok"))
            .Pax('x', ("SCHILY.xattr.bogusnamespace.x", B("v")))
            .Header([.. B("bad-"), 0xFF], '0', 0)
            .End());
        var (report, results) = await LoopbackSession.RunAsync(ImageSource.Open(image), 2, 1,
            i => PayloadSelection.ClientSinks(_dir.Sub($"node{i}"), null, null, false, false, TextWriter.Null));
        Assert.False(report.Success);
        Assert.All(results, r => Assert.False(r.Verified));
        Assert.All(results, r => Assert.Contains("'bad-\\xff'", r.Message));
    }

    [Fact]
    public async Task ANumericFieldStartingWithNulIsZeroAsGnuTarReadsIt()
    {
        // libarchive's test_read_format_tar_timestamp_overflow: "\0\0\0\0016" in the size field; GNU tar reads 0.
        byte[] archive = new RawTar().Header(B("f"), '0', 0, format: "gnu", tweak: h =>
        {
            h.AsSpan(124, 12).Clear();
            "0016"u8.CopyTo(h.AsSpan(131));
        }).End();
        await ExtractAsync(archive);
        Assert.Equal(0, new FileInfo(Path.Combine(Target, "f")).Length);
    }

    [SkippableFact]
    public async Task AStarAclWithoutAMaskGetsTheMaskSetfaclWouldCompute()
    {
        Skip.IfNot(Environment.IsPrivilegedProcess, "setting ACLs naming other users needs root");
        byte[] archive = new RawTar()
            .Pax('x', ("SCHILY.acl.access", B("user::--x,group::r--,other::-w-,user:user77:r--:77,group:group78:rwx:78")))
            .Header(B("f"), '0', 0, mode: "0000142")
            .End();
        await ExtractAsync(archive);
        string acl = TempDirectory.RunCapture("getfacl", "-n", "-p", Path.Combine(Target, "f")).Output;
        Assert.Contains("user:77:r--", acl);
        Assert.Contains("mask::rwx", acl);
    }
}
