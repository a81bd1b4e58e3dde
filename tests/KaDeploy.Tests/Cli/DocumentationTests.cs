using System.Text.RegularExpressions;
using KaDeploy.Cli;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Cli;

/// <summary>Man pages and completion are generated from the option definitions; here they are compared with --help, which is too.</summary>
public sealed class DocumentationTests
{
    public static TheoryData<string, string> HelpPages() => new()
    {
        { "ka-deploy", "server" }, { "ka-deploy", "client" }, { "ka-deploy", "go" }, { "ka-deploy", "demo" }, { "ka-deploy", "report" },
        { "ka-d-server", "" }, { "ka-d-client", "" },
    };

    // Option spellings as --help prints them: "  -n, --clients <N>  Number of..."
    private static HashSet<string> HelpOptions(string help)
    {
        var set = new HashSet<string>();
        bool inOptions = false;
        foreach (var line in help.Split('\n'))
        {
            if (line.StartsWith("Options:", StringComparison.Ordinal)) { inOptions = true; continue; }
            if (inOptions && line.Length > 0 && !char.IsWhiteSpace(line[0])) inOptions = false;
            if (!inOptions) continue;
            var m = Regex.Match(line, @"^\s{2}((?:-{1,2}[\w?-]+(?:, )?)+)");
            if (m.Success) foreach (var s in m.Groups[1].Value.Split(", ")) set.Add(s.Trim());
        }
        return set;
    }

    [Theory]
    [MemberData(nameof(HelpPages))]
    public async Task ManPageAndCompletionListExactlyWhatHelpLists(string program, string command)
    {
        using var dir = new TempDirectory("kad-doc");
        string exe = CliRunner.AppHost;
        if (program != "ka-deploy")
        {
            exe = dir.Sub(program);
            File.CreateSymbolicLink(exe, CliRunner.AppHost);
        }
        var r = await CliRunner.RunAsync(exe, command.Length > 0 ? [command, "--help"] : ["--help"]);
        Assert.Equal(0, r.Code);
        var help = HelpOptions(r.Out);
        Assert.NotEmpty(help);

        // The man page: the options of this command's section (ka-deploy(1) has one section per command).
        string man = Documentation.ManPage(program);
        string section = man;
        if (command.Length > 0)
        {
            int start = man.IndexOf($".SS {command}\n", StringComparison.Ordinal);
            Assert.True(start >= 0, $"no section for {command} in ka-deploy(1)");
            int end = man.IndexOf(".SS ", start + 4, StringComparison.Ordinal);
            if (end < 0) end = man.IndexOf(".SH GLOBAL", start, StringComparison.Ordinal);
            section = man[start..end];
        }
        var manOptions = Regex.Matches(section, @"^\.B ((?:\\?-[^\s,]+(?:, )?)+)", RegexOptions.Multiline)
            .SelectMany(m => m.Groups[1].Value.Split(", ")).Select(s => s.Replace("\\-", "-", StringComparison.Ordinal).Trim()).ToHashSet();
        Assert.True(help.SetEquals(manOptions), $"--help: {string.Join(' ', help.Order())}\nman:    {string.Join(' ', manOptions.Order())}");

        // Completion: every spelling --help lists is offered by both shells.
        string bash = Documentation.Bash(), zsh = Documentation.Zsh();
        string fn = "_" + program.Replace('-', '_');
        string bashPart = bash[bash.IndexOf(fn + "()", StringComparison.Ordinal)..];
        bashPart = bashPart[..bashPart.IndexOf("complete -F", StringComparison.Ordinal)];
        if (command.Length > 0) bashPart = Regex.Match(bashPart, $@"\n\s+{command}\) COMPREPLY=\(\$\(compgen -W ""([^""]*)""").Groups[1].Value;
        string zshPart = zsh[zsh.IndexOf(fn + "()", StringComparison.Ordinal)..];
        zshPart = zshPart[..zshPart.IndexOf("\n}\n", StringComparison.Ordinal)];
        if (command.Length > 0) zshPart = zshPart[zshPart.IndexOf($"        {command}) _arguments", StringComparison.Ordinal)..][..Math.Max(0, zshPart[zshPart.IndexOf($"        {command}) _arguments", StringComparison.Ordinal)..].IndexOf(";;", StringComparison.Ordinal))];
        foreach (var o in help)
        {
            Assert.Matches($@"(^|[\s|(""]){Regex.Escape(o)}($|[\s|)""])", bashPart);
            Assert.Matches($@"[{{,'(]{Regex.Escape(o)}[}},'\[ )]", zshPart);
        }
    }

    [SkippableFact]
    public async Task TheGeneratedFilesAreValidForTheirTools()
    {
        using var dir = new TempDirectory("kad-doc");
        string bash = dir.Sub("ka-deploy.bash");
        File.WriteAllText(bash, Documentation.Bash());
        var b = await CliRunner.RunAsync("bash", ["-n", bash]);
        Assert.True(b.Code == 0, b.Err);
        // The completion works: "ka-deploy server --cl<TAB>" offers --clients.
        var c = await CliRunner.RunAsync("bash", ["-c", $"source '{bash}'; COMP_WORDS=(ka-deploy server --cl); COMP_CWORD=2; _ka_deploy; echo \"${{COMPREPLY[@]}}\""]);
        Assert.Equal("--clients", c.Out.Trim());
        var v = await CliRunner.RunAsync("bash", ["-c", $"source '{bash}'; COMP_WORDS=(ka-deploy server --events ''); COMP_CWORD=3; _ka_deploy; echo \"${{COMPREPLY[@]}}\""]);
        Assert.Equal("json", v.Out.Trim());
        if (File.Exists("/usr/bin/zsh") || File.Exists("/bin/zsh"))
        {
            string zsh = dir.Sub("_ka-deploy");
            File.WriteAllText(zsh, Documentation.Zsh());
            var z = await CliRunner.RunAsync("zsh", ["-n", zsh]);
            Assert.True(z.Code == 0, z.Err);
        }
        Skip.IfNot(File.Exists("/usr/bin/groff"), "groff not installed: man page syntax not checked (bash completion was)");
        foreach (var name in KaDeploy.Cli.Cli.Names)
        {
            string page = dir.Sub(name + ".1");
            File.WriteAllText(page, Documentation.ManPage(name));
            var g = await CliRunner.RunAsync("groff", ["-man", "-Tutf8", "-ww", "-z", page]);
            Assert.True(g.Code == 0 && g.Err.Length == 0, $"{name}.1: {g.Err}");
        }
    }
}
