using System.CommandLine;
using KaDeploy.Cli;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Cli;

/// <summary>
/// Every option that takes a value, of every command, found by walking the same command tree --help is made from:
/// a refused value gives one clear line and exit 2 (usage) or 1 (runtime), never a stack trace, and never a
/// session that starts anyway. An option added without a refused value (<see cref="Opt.BadExample"/>) fails here.
/// </summary>
public sealed class OptionValueTests : IDisposable
{
    private readonly TempDirectory _dir = new("kad-opt");

    /// <summary>Every visible command of <paramref name="root"/> at any depth, with its path below the root ("netboot serve").</summary>
    private static IEnumerable<(string Path, Command Command)> Commands(Command root, string prefix = "")
    {
        foreach (var cmd in root.Subcommands.Where(c => !c.Hidden))
        {
            string path = prefix.Length == 0 ? cmd.Name : $"{prefix} {cmd.Name}";
            yield return (path, cmd);
            foreach (var sub in Commands(cmd, path)) yield return sub;
        }
    }

    private static IEnumerable<Option> ValueOptionsOf(Command cmd) =>
        cmd.Options.Where(o => !o.Hidden && Opt.TakesValue(o) && o is not System.CommandLine.Help.HelpOption && o is not VersionOption);

    public static TheoryData<string, string> ValueOptions()
    {
        var data = new TheoryData<string, string>();
        foreach (var (path, cmd) in Commands(KaDeploy.Cli.Cli.Build("ka-deploy")))
            foreach (var o in ValueOptionsOf(cmd))
                data.Add(path, o.Name);
        return data;
    }

    [Fact]
    public void TheTableCoversEveryCommandThatTakesValues()
    {
        var rows = ValueOptions().Select(r => (string)r[0]).Distinct().ToArray();
        Assert.Equal(["server", "client", "go", "demo", "report", "netboot image", "netboot serve", "netboot status", "netboot state"], rows);
        Assert.True(ValueOptions().Count() >= 60, $"only {ValueOptions().Count()} value options found");
    }

    /// <summary>The original's names (ka-d-server, ka-d-client) are built from the same factories; each of their value
    /// options records a refused value too (they are run as processes through the ka-deploy rows, which share the definitions).</summary>
    [Theory]
    [InlineData("ka-d-server")]
    [InlineData("ka-d-client")]
    public void EveryValueOptionOfTheOriginalsNamesRefusesSomething(string name)
    {
        var root = KaDeploy.Cli.Cli.Build(name);
        var missing = ValueOptionsOf(root).Where(o => Opt.BadExample(o) is null).Select(o => o.Name).ToArray();
        Assert.True(ValueOptionsOf(root).Count() >= 10, $"{name}: only {ValueOptionsOf(root).Count()} value options");
        Assert.True(missing.Length == 0, $"{name}: no refused value recorded for {string.Join(", ", missing)}");
    }

    private string[] BaseArgs(string command, string option)
    {
        string report = _dir.Sub("run.json");
        if (!File.Exists(report)) File.WriteAllText(report, "{\"session\":\"s\",\"nodes\":[]}");
        string fakeDeb = _dir.Sub("fake.deb"), nodes = _dir.Sub("nodes");
        if (!File.Exists(fakeDeb)) File.WriteAllText(fakeDeb, "not a deb");
        if (!File.Exists(nodes)) File.WriteAllText(nodes, "n1 52:54:00:12:34:56\n");
        // The netboot rows never reach dnsmasq or apt-get: with only the option under test wrong, the worst that runs is
        // the image build, which refuses the junk .deb at once (and the row fails, since that message names another option).
        string[] args = command switch
        {
            "netboot image" => ["--cache", _dir.Sub("cache"), "--kernel-package", fakeDeb],
            "netboot serve" => ["--interface", "lo", "--nodes", nodes, "--install", "/dev/vdz", "--state-dir", _dir.Sub("state"),
                "--cache", _dir.Sub("cache"), "--kernel-package", fakeDeb, "--range", "127.0.0.100,127.0.0.150"],
            "netboot status" => ["--state-dir", _dir.Sub("state")],
            "netboot state" => ["n1", "install", "--state-dir", _dir.Sub("state")],
            "server" => ["--source", _dir.Path, "--port", "0", "--no-discovery", "--clients", "1"],
            "client" => ["--server", "127.0.0.1:1", "--connect-timeout", "1", "--target", _dir.Sub("target")],
            "go" => ["--server", "127.0.0.1:1", "--connect-timeout", "1"],
            "demo" => ["--clients", "1"],
            "report" => [report, "--no-svg"],
            _ => [],
        };
        // The option under test replaces its base value (and its mutually exclusive payload options).
        var drop = new HashSet<string> { option };
        if (command == "server" && option is "--image" or "--device" or "--exec") drop.Add("--source");
        if (command == "client" && option is "--device" or "--exec") drop.Add("--target");
        if (command == "netboot serve" && option is "--device") drop.Add("--install");
        var kept = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            if (drop.Contains(args[i])) { i++; continue; }
            kept.Add(args[i]);
        }
        return [.. kept];
    }

    [Theory]
    [MemberData(nameof(ValueOptions))]
    public async Task ARefusedValueIsOneLineAndExit2Or1(string command, string option)
    {
        var cmd = Commands(KaDeploy.Cli.Cli.Build("ka-deploy")).Single(c => c.Path == command).Command;
        var o = cmd.Options.Single(x => x.Name == option);
        string? bad = Opt.BadExample(o);
        Assert.True(bad is not null, $"{command} {option}: no refused value recorded (define it through Opt, which checks values)");
        string[] args = [.. command.Split(' '), .. BaseArgs(command, option), $"{option}={bad}"];
        var r = await CliRunner.RunAsync(CliRunner.AppHost, args, TimeSpan.FromSeconds(30));
        CliRunner.AssertOneLineRefusal(r, string.Join(' ', args), 1, 2);
        Assert.Contains(option, r.Err);
    }

    public void Dispose() => _dir.Dispose();
}
