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

    public static TheoryData<string, string> ValueOptions()
    {
        var data = new TheoryData<string, string>();
        var root = KaDeploy.Cli.Cli.Build("ka-deploy");
        foreach (var cmd in root.Subcommands.Where(c => !c.Hidden))
            foreach (var o in cmd.Options.Where(o => !o.Hidden && Opt.TakesValue(o) && o is not System.CommandLine.Help.HelpOption && o is not VersionOption))
                data.Add(cmd.Name, o.Name);
        return data;
    }

    [Fact]
    public void TheTableCoversEveryCommandThatTakesValues()
    {
        var rows = ValueOptions().Select(r => (string)r[0]).Distinct().ToArray();
        Assert.Equal(["server", "client", "go", "demo", "report"], rows);
        Assert.True(ValueOptions().Count() >= 40, $"only {ValueOptions().Count()} value options found");
    }

    private string[] BaseArgs(string command, string option)
    {
        string report = _dir.Sub("run.json");
        if (!File.Exists(report)) File.WriteAllText(report, "{\"session\":\"s\",\"nodes\":[]}");
        string[] args = command switch
        {
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
        var cmd = KaDeploy.Cli.Cli.Build("ka-deploy").Subcommands.Single(c => c.Name == command);
        var o = cmd.Options.Single(x => x.Name == option);
        string? bad = Opt.BadExample(o);
        Assert.True(bad is not null, $"{command} {option}: no refused value recorded (define it through Opt, which checks values)");
        string[] args = [command, .. BaseArgs(command, option), $"{option}={bad}"];
        var r = await CliRunner.RunAsync(CliRunner.AppHost, args, TimeSpan.FromSeconds(30));
        CliRunner.AssertOneLineRefusal(r, string.Join(' ', args), 1, 2);
        Assert.Contains(option, r.Err);
    }

    public void Dispose() => _dir.Dispose();
}
