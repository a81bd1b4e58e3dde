using System.CommandLine;
using System.Globalization;
using System.Text;

namespace KaDeploy.Cli;

/// <summary>
/// Man pages and shell completion, generated from the same <see cref="Command"/> trees as --help (<see cref="Cli.Build"/>):
/// an option added anywhere shows up in all three. `ka-deploy doc man NAME` and `ka-deploy doc completion bash|zsh`
/// print them; the Debian package is built from that output.
/// </summary>
internal static class Documentation
{
    public static Command Command()
    {
        var cmd = new Command("doc", "Print a man page (troff) or a shell completion script, generated from the option definitions.") { Hidden = true };
        var man = new Command("man", "Print the man page of ka-deploy, ka-d-server or ka-d-client");
        var name = new Argument<string>("NAME") { Description = "ka-deploy, ka-d-server or ka-d-client", DefaultValueFactory = _ => "ka-deploy" };
        name.AcceptOnlyFromAmong(Cli.Names);
        man.Arguments.Add(name);
        man.SetAction(p => Console.Out.Write(ManPage(p.GetValue(name)!)));
        var completion = new Command("completion", "Print the completion script for bash or zsh (covers all three names)");
        var shell = new Argument<string>("SHELL") { Description = "bash or zsh" };
        shell.AcceptOnlyFromAmong("bash", "zsh");
        completion.Arguments.Add(shell);
        completion.SetAction(p => Console.Out.Write(p.GetValue(shell) == "zsh" ? Zsh() : Bash()));
        cmd.Subcommands.Add(man);
        cmd.Subcommands.Add(completion);
        return cmd;
    }

    /// <summary>The options of a command as --help lists them: its own visible ones, then those its ancestors pass down (--help).</summary>
    public static IEnumerable<Option> VisibleOptions(Command cmd)
    {
        var own = cmd.Options.Where(o => !o.Hidden).ToList();
        var inherited = new List<Option>();
        for (var parent = cmd.Parents.OfType<Command>().FirstOrDefault(); parent is not null; parent = parent.Parents.OfType<Command>().FirstOrDefault())
            inherited.AddRange(parent.Options.Where(o => o.Recursive && !o.Hidden && !own.Contains(o) && !inherited.Contains(o)));
        return own.Concat(inherited);
    }

    /// <summary>All spellings of an option, long first.</summary>
    public static IEnumerable<string> Spellings(Option o) => new[] { o.Name }.Concat(o.Aliases).Distinct().OrderBy(s => s.StartsWith("--", StringComparison.Ordinal) ? 1 : 0);

    private static IEnumerable<Command> VisibleSubcommands(Command cmd) => cmd.Subcommands.Where(c => !c.Hidden);

    // ---- man pages ----

    private static string Roff(string text)
    {
        var s = text.Replace("\\", "\\e", StringComparison.Ordinal).Replace("-", "\\-", StringComparison.Ordinal);
        return s.Length > 0 && (s[0] == '.' || s[0] == '\'') ? "\\&" + s : s;
    }

    private static string DefaultText(Option o)
    {
        if (!o.HasDefaultValue || o.ValueType == typeof(bool)) return "";
        var v = o.GetDefaultValue();
        return v is null ? "" : Convert.ToString(v, CultureInfo.InvariantCulture) ?? "";
    }

    /// <summary>The man page of <paramref name="name"/> (ka-deploy(1), ka-d-server(1) or ka-d-client(1)).</summary>
    public static string ManPage(string name)
    {
        var root = Cli.Build(name);
        var sb = new StringBuilder();
        string version = typeof(Documentation).Assembly.GetName().Version?.ToString(3) ?? "";
        sb.Append(CultureInfo.InvariantCulture, $".TH {name.ToUpperInvariant()} 1 \"\" \"ka-deploy {version}\" \"User Commands\"\n");
        sb.Append(".SH NAME\n").Append(Roff(name)).Append(" \\- ").Append(Roff(Summary(root.Description ?? "", name))).Append('\n');
        sb.Append(".SH SYNOPSIS\n");
        if (root.Subcommands.Any(c => !c.Hidden))
        {
            foreach (var sub in VisibleSubcommands(root))
                sb.Append(".B ").Append(Roff(name)).Append("\n.B ").Append(Roff(sub.Name)).Append("\n.RI [ options ]\n.br\n");
        }
        else sb.Append(".B ").Append(Roff(name)).Append("\n.RI [ options ]\n");
        sb.Append(".SH DESCRIPTION\n").Append(Roff(root.Description ?? "")).Append('\n');
        sb.Append(Prose(name));
        if (root.Subcommands.Any(c => !c.Hidden))
        {
            sb.Append(".SH COMMANDS\n");
            foreach (var sub in VisibleSubcommands(root))
            {
                sb.Append(".SS ").Append(Roff(sub.Name)).Append('\n').Append(Roff(sub.Description ?? "")).Append('\n');
                AppendOptions(sb, sub);
            }
            sb.Append(".SH GLOBAL OPTIONS\n");
        }
        else sb.Append(".SH OPTIONS\n");
        AppendOptions(sb, root);
        sb.Append(".SH EXIT STATUS\n.TP\n.B 0\nSuccess: every node verified its copy (server), this node's copy is verified (client).\n");
        sb.Append(".TP\n.B 1\nThe session failed, or a value was refused at run time (a file that cannot be read, a target that cannot be written).\n");
        sb.Append(".TP\n.B 2\nUsage error: an unknown option, a missing or malformed value, a value out of range. Nothing was started.\n");
        sb.Append(".SH FILES\n.TP\n.I /usr/share/doc/ka\\-deploy/\nREADME and the wire protocol.\n");
        sb.Append(".SH SEE ALSO\n");
        sb.Append(string.Join(",\n", Cli.Names.Where(n => n != name).Select(n => $".BR {Roff(n)} (1)"))).Append('\n');
        return sb.ToString();
    }

    private static string Summary(string description, string name)
    {
        string d = description.StartsWith(name + ":", StringComparison.Ordinal) ? description[(name.Length + 1)..].Trim() : description;
        int dot = d.IndexOf(". ", StringComparison.Ordinal);
        return (dot > 0 ? d[..dot] : d).TrimEnd('.');
    }

    private static string Prose(string name) => name switch
    {
        "ka-d-server" => ".PP\nThe original ka\\-deploy's server name: the same program as\n.BR \"ka\\-deploy server\" ,\nwith the original's short options.\n",
        "ka-d-client" => ".PP\nThe original ka\\-deploy's client name: the same program as\n.BR \"ka\\-deploy client\" ,\nwith the original's short options. Here\n.B \\-h\nis the server's host; help is\n.BR \\-\\-help .\n",
        _ => ".PP\nThe server runs on the machine to clone and waits for the clients, which run on the nodes. It arranges them in a chain (or a balanced tree) of TCP links and streams the payload down it; each node writes the stream and forwards it at the same time, then checks the SHA\\-256 of what it wrote against the server's.\nOn a terminal the server shows a live view of the cluster (one row per node: its place in the chain or tree, state, bytes, rate and ETA; the slowest node highlighted); otherwise it logs a progress line every 5 seconds.\n",
    };

    private static void AppendOptions(StringBuilder sb, Command cmd)
    {
        foreach (var o in VisibleOptions(cmd))
        {
            sb.Append(".TP\n.B ").Append(string.Join(", ", Spellings(o).Select(Roff)));
            if (Opt.TakesValue(o) || o.ValueType != typeof(bool) && o.Arity.MaximumNumberOfValues > 0)
                sb.Append(" \\fI").Append(Roff(o.HelpName ?? "VALUE")).Append("\\fR");
            sb.Append('\n').Append(Roff(o.Description ?? ""));
            string def = DefaultText(o);
            if (def.Length > 0) sb.Append(" (default: ").Append(Roff(def)).Append(')');
            sb.Append('\n');
        }
    }

    // ---- completion ----

    private static string ValueWords(Option o) => Opt.ValueKind(o) switch
    {
        null => "",
        "file" => "@file",
        "directory" => "@directory",
        "host" => "@host",
        var words => words,
    };

    /// <summary>The bash completion script for all three names.</summary>
    public static string Bash()
    {
        var sb = new StringBuilder();
        sb.Append("# bash completion for ka-deploy, ka-d-server and ka-d-client (generated by `ka-deploy doc completion bash`)\n");
        foreach (var name in Cli.Names)
        {
            var root = Cli.Build(name);
            string fn = "_" + name.Replace('-', '_');
            sb.Append(fn).Append("()\n{\n    local cur prev cmd i\n    cur=\"${COMP_WORDS[COMP_CWORD]}\"\n    prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n    cmd=\"\"\n");
            bool subs = VisibleSubcommands(root).Any();
            if (subs)
                sb.Append("    for ((i = 1; i < COMP_CWORD; i++)); do case \"${COMP_WORDS[i]}\" in -*) ;; *) cmd=\"${COMP_WORDS[i]}\"; break ;; esac; done\n");
            // Values first: after an option that takes one, complete the value.
            sb.Append("    case \"$prev\" in\n");
            var byValue = new Dictionary<string, List<string>>();
            foreach (var c in Cli.Walk(root))
                foreach (var o in VisibleOptions(c).Where(Opt.TakesValue))
                {
                    string w = ValueWords(o);
                    if (!byValue.TryGetValue(w, out var list)) byValue[w] = list = [];
                    list.AddRange(Spellings(o).Where(s => !list.Contains(s)));
                }
            foreach (var (words, spellings) in byValue)
            {
                string action = words switch
                {
                    "@file" => "COMPREPLY=($(compgen -f -- \"$cur\"))",
                    "@directory" => "COMPREPLY=($(compgen -d -- \"$cur\"))",
                    "@host" => "COMPREPLY=($(compgen -A hostname -- \"$cur\"))",
                    "" => "COMPREPLY=()",
                    _ => $"COMPREPLY=($(compgen -W \"{words}\" -- \"$cur\"))",
                };
                sb.Append("        ").Append(string.Join('|', spellings.Distinct())).Append(") ").Append(action).Append("; return ;;\n");
            }
            sb.Append("    esac\n");
            if (subs)
            {
                sb.Append("    case \"$cmd\" in\n");
                foreach (var sub in VisibleSubcommands(root))
                    sb.Append("        ").Append(sub.Name).Append(") COMPREPLY=($(compgen -W \"").Append(string.Join(' ', VisibleOptions(sub).SelectMany(Spellings)))
                        .Append("\" -- \"$cur\")); return ;;\n");
                sb.Append("    esac\n    COMPREPLY=($(compgen -W \"").Append(string.Join(' ', VisibleSubcommands(root).Select(c => c.Name).Concat(VisibleOptions(root).SelectMany(Spellings))))
                    .Append("\" -- \"$cur\"))\n");
            }
            else sb.Append("    COMPREPLY=($(compgen -W \"").Append(string.Join(' ', VisibleOptions(root).SelectMany(Spellings))).Append("\" -- \"$cur\"))\n");
            sb.Append("}\ncomplete -F ").Append(fn).Append(' ').Append(name).Append("\n\n");
        }
        return sb.ToString();
    }

    private static string ZshEscape(string s) => s.Replace("'", "'\\''", StringComparison.Ordinal).Replace("[", "\\[", StringComparison.Ordinal)
        .Replace("]", "\\]", StringComparison.Ordinal).Replace(":", "\\:", StringComparison.Ordinal);

    private static void ZshSpecs(StringBuilder sb, Command cmd, string indent)
    {
        foreach (var o in VisibleOptions(cmd))
        {
            var spellings = Spellings(o).ToArray();
            string names = spellings.Length == 1 ? spellings[0] : "{" + string.Join(',', spellings) + "}";
            string exclusion = spellings.Length == 1 ? "" : "(" + string.Join(' ', spellings) + ")";
            string value = "";
            if (Opt.TakesValue(o))
            {
                string words = ValueWords(o);
                string action = words switch { "@file" => "_files", "@directory" => "_files -/", "@host" => "_hosts", "" => " ", _ => $"({words})" };
                value = $":{ZshEscape(o.HelpName ?? "value")}:{action}";
            }
            sb.Append(indent).Append('\'').Append(exclusion).Append("'").Append(names).Append("'[").Append(ZshEscape(o.Description ?? "")).Append(']').Append(value).Append("' \\\n");
        }
    }

    /// <summary>The zsh completion script for all three names.</summary>
    public static string Zsh()
    {
        var sb = new StringBuilder();
        sb.Append("#compdef ka-deploy ka-d-server ka-d-client\n# zsh completion (generated by `ka-deploy doc completion zsh`)\n\n");
        foreach (var name in Cli.Names)
        {
            var root = Cli.Build(name);
            string fn = "_" + name.Replace('-', '_');
            sb.Append(fn).Append("() {\n");
            if (VisibleSubcommands(root).Any())
            {
                sb.Append("  local curcontext=\"$curcontext\" state line\n  _arguments -C \\\n");
                ZshSpecs(sb, root, "    ");
                sb.Append("    '1:command:->cmds' '*::arg:->args'\n  case $state in\n    cmds) _values 'command' ");
                foreach (var sub in VisibleSubcommands(root)) sb.Append('\'').Append(sub.Name).Append('[').Append(ZshEscape(sub.Description ?? "")).Append("]' ");
                sb.Append(";;\n    args)\n      case $line[1] in\n");
                foreach (var sub in VisibleSubcommands(root))
                {
                    sb.Append("        ").Append(sub.Name).Append(") _arguments \\\n");
                    ZshSpecs(sb, sub, "          ");
                    sb.Append("          ;;\n");
                }
                sb.Append("      esac ;;\n  esac\n}\n\n");
            }
            else
            {
                sb.Append("  _arguments \\\n");
                ZshSpecs(sb, root, "    ");
                sb.Append("\n}\n\n");
            }
        }
        sb.Append("case $service in\n");
        foreach (var name in Cli.Names) sb.Append("  ").Append(name).Append(") _").Append(name.Replace('-', '_')).Append(" \"$@\" ;;\n");
        sb.Append("esac\n");
        return sb.ToString();
    }
}
