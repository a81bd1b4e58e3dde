using KaDeploy.Payloads;
using KaDeploy.Protocol;

namespace KaDeploy.Tests.Protocol;

/// <summary>
/// The digest names the command line and the report use, and what a Plan shows of itself in a log (never its
/// keys): before these, only session tests reached <c>DigestAlgorithm.cs</c> and <c>ControlMessages.cs</c>, so
/// Stryker's Protocol/ runs counted their mutants as survived or not covered.
/// </summary>
public class DigestNameAndPlanTextTests
{
    [Theory]
    [InlineData(DigestAlgorithm.Sha256, "sha256")]
    [InlineData(DigestAlgorithm.Blake3, "blake3")]
    [InlineData(DigestAlgorithm.XxHash128, "xxh128")]
    [InlineData(DigestAlgorithm.Frames, "frames")]
    public void EachAlgorithmHasItsNameAndTheNameParsesBack(DigestAlgorithm algorithm, string name)
    {
        Assert.Equal(name, algorithm.Name());
        Assert.Equal(algorithm, DigestAlgorithms.Parse(name));
    }

    [Fact]
    public void AnAlgorithmWithoutANameIsShownByItsNumber()
    {
        Assert.Equal("digest-9", ((DigestAlgorithm)9).Name());
        Assert.Equal("digest-0", ((DigestAlgorithm)0).Name());
    }

    [Theory]
    [InlineData("sha-256", DigestAlgorithm.Sha256)]
    [InlineData(" SHA256\n", DigestAlgorithm.Sha256)]
    [InlineData("BLAKE3", DigestAlgorithm.Blake3)]
    [InlineData("xxh3-128", DigestAlgorithm.XxHash128)]
    [InlineData("XXH128 ", DigestAlgorithm.XxHash128)]
    public void TheUsualSpellingsParseWhateverTheirCaseAndSpaces(string text, DigestAlgorithm algorithm)
    {
        Assert.Equal(algorithm, DigestAlgorithms.Parse(text));
    }

    [Theory]
    [InlineData("md5")]
    [InlineData("")]
    [InlineData("sha256sum")]
    public void AnyOtherNameIsRefusedOnOneLineWithTheChoices(string text)
    {
        var e = Assert.Throws<KaDeployException>(() => DigestAlgorithms.Parse(text));
        Assert.Equal($"unknown digest '{text}' (frames, xxh128, sha256 or blake3)", e.Message);
    }

    private static Plan PlanWith(byte[]? streamKey) =>
        new(4, 2, "198.18.0.2", 999, [5, 6], PayloadKind.Tar, WireCompression.Zstd, 123, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6],
            DigestAlgorithm.Blake3, streamKey, 77);

    [Fact]
    public void APlanIsKeyedExactlyWhenItCarriesAStreamKey()
    {
        Assert.False(PlanWith(null).Keyed);
        Assert.False(PlanWith([]).Keyed);
        Assert.True(PlanWith([1]).Keyed);
        Assert.True(PlanWith(new byte[32]).Keyed);
    }

    [Fact]
    public void APlanInALogShowsWhereTheNodeSitsAndWhetherItIsKeyedButNeverAKey()
    {
        var key = Enumerable.Range(200, 32).Select(i => (byte)i).ToArray();
        Assert.Equal("Plan { NodeId = 4, ParentId = 2, ParentAddress = 198.18.0.2, ParentPort = 999, Kind = Tar, Keyed = True }", PlanWith(key).ToString());
        Assert.Equal("Plan { NodeId = 4, ParentId = 2, ParentAddress = 198.18.0.2, ParentPort = 999, Kind = Tar, Keyed = False }", PlanWith(null).ToString());
    }
}
