using System.CommandLine;
using KaDeploy;
using KaDeploy.Cli;

// One binary, three names: `ka-deploy` with subcommands, and the original's `ka-d-server` and
// `ka-d-client` (links placed next to it by the build) that take the original's short options.
string name = Cli.InvokedName();
return await Cli.RunAsync(name, args);

namespace KaDeploy.Cli
{
    /// <summary>The command tree of each of the three names, and how a command line is run.</summary>
    internal static class Cli
    {
        /// <summary>The names this binary answers to; each has its own man page.</summary>
        public static readonly string[] Names = ["ka-deploy", "ka-d-server", "ka-d-client"];

        /// <summary>The command tree for <paramref name="name"/>: the single source of --help, the man pages and completion.</summary>
        public static RootCommand Build(string name)
        {
            RootCommand root;
            switch (name)
            {
                case "ka-d-server":
                    root = new RootCommand("ka-d-server: run on the machine to clone; waits for N clients and streams the system to them (the original's options).");
                    Commands.AddServerOptions(root, compat: true);
                    break;
                case "ka-d-client":
                    root = new RootCommand("ka-d-client: run on each node to install; joins the chain and writes the stream (the original's options).");
                    // The original's -h is the server's host, so help keeps only --help and -? here (and no /h, /? either).
                    var help = root.Options.OfType<System.CommandLine.Help.HelpOption>().Single();
                    foreach (var alias in help.Aliases.Where(a => a != "-?").ToArray()) help.Aliases.Remove(alias);
                    Commands.AddClientOptions(root, compat: true);
                    break;
                default:
                    root = new RootCommand("ka-deploy: clone one Linux machine onto many nodes at once over a self-organising TCP chain.");
                    var server = new Command("server", "Run on the machine to clone: wait for clients, build the chain or tree, stream the payload, report.");
                    Commands.AddServerOptions(server, compat: false);
                    var client = new Command("client", "Run on each node to install: register, link into the chain, write and forward the stream, verify.");
                    Commands.AddClientOptions(client, compat: false);
                    root.Subcommands.Add(server);
                    root.Subcommands.Add(client);
                    root.Subcommands.Add(Commands.GoCommand());
                    root.Subcommands.Add(Demo.Command());
                    root.Subcommands.Add(ReportCommand.Command());
                    root.Subcommands.Add(Documentation.Command());
                    root.Subcommands.Add(KeygenCommand.Command());
                    if (OperatingSystem.IsLinux()) root.Subcommands.Add(NetbootCommands.Command()); // dnsmasq, initramfs: Linux only
                    break;
            }
            // Every command answers --version, not only the root (an administrator types `ka-deploy server --version`).
            foreach (var cmd in Walk(root).Where(c => c is not RootCommand && !c.Options.OfType<VersionOption>().Any()))
                cmd.Options.Add(new VersionOption());
            // Slash aliases (/h, /?) are a Windows habit; on Linux a path may start with a slash.
            foreach (var help in Walk(root).SelectMany(c => c.Options.OfType<System.CommandLine.Help.HelpOption>()))
                foreach (var alias in help.Aliases.Where(a => a.StartsWith('/')).ToArray()) help.Aliases.Remove(alias);
            return root;
        }

        /// <summary>A command and all its subcommands, depth first.</summary>
        public static IEnumerable<Command> Walk(Command command)
        {
            yield return command;
            foreach (var sub in command.Subcommands)
                foreach (var c in Walk(sub)) yield return c;
        }

        /// <summary>Parses and runs; errors reach the operator as one line naming what was wrong. Exit 2: usage; 1: runtime.</summary>
        public static async Task<int> RunAsync(string name, string[] args)
        {
            var root = Build(name);
            var parse = root.Parse(args);
            // Help and --version run even beside other mistakes; any other parse error is one line and exit 2.
            bool informational = parse.Action is System.CommandLine.Help.HelpAction
                || parse.Action?.GetType().Name.Contains("Version", StringComparison.Ordinal) == true;
            if (parse.Errors.Count > 0 && !informational)
            {
                string command = string.Join(' ', parse.CommandResult.Command is RootCommand ? [name] : new[] { name, parse.CommandResult.Command.Name });
                Console.Error.WriteLine($"{name}: {parse.Errors[0].Message.ReplaceLineEndings(" ")} (see {command} --help)");
                return 2;
            }
            try
            {
                return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
            }
            catch (UsageException e)
            {
                Console.Error.WriteLine($"{name}: {e.Message}");
                return 2;
            }
            catch (KaDeployException e)
            {
                Console.Error.WriteLine($"{name}: {e.Message.ReplaceLineEndings(" ")}");
                return 1;
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine($"{name}: interrupted");
                return 130;
            }
            catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
            {
                Console.Error.WriteLine($"{name}: {e.Message.ReplaceLineEndings(" ")}");
                return 1;
            }
        }

        // The name this process was started by. .NET reports the managed assembly as argv[0], so read the
        // real one from /proc (the apphost and a NativeAOT binary keep the exec'd argv there).
        public static string InvokedName()
        {
            if (Environment.GetEnvironmentVariable("KA_DEPLOY_INVOKED_AS") is { Length: > 0 } forced) return forced;
            try
            {
                var cmdline = File.ReadAllBytes("/proc/self/cmdline");
                int nul = Array.IndexOf(cmdline, (byte)0);
                var argv0 = System.Text.Encoding.UTF8.GetString(cmdline, 0, nul < 0 ? cmdline.Length : nul);
                return Path.GetFileName(argv0);
            }
            catch (IOException)
            {
                return "ka-deploy";
            }
        }
    }
}
