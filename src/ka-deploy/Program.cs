using System.CommandLine;
using System.CommandLine.Help;
using KaDeploy;
using KaDeploy.Cli;

// One binary, three names: `ka-deploy` with subcommands, and the original's `ka-d-server` and
// `ka-d-client` (links placed next to it by the build) that take the original's short options.
string name = InvokedName();
RootCommand root;
switch (name)
{
    case "ka-d-server":
        root = new RootCommand("ka-d-server: run on the machine to clone; waits for N clients and streams the system to them (the original's options).");
        Commands.AddServerOptions(root, compat: true);
        break;
    case "ka-d-client":
        root = new RootCommand("ka-d-client: run on each node to install; joins the chain and writes the stream (the original's options).");
        // The original's -h is the server's host, so help keeps only its long forms here.
        var help = root.Options.OfType<HelpOption>().Single();
        help.Aliases.Remove("-h");
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
        if (OperatingSystem.IsLinux()) root.Subcommands.Add(NetbootCommands.Command()); // dnsmasq, initramfs: Linux only
        break;
}

// Errors reach the operator as one line naming what was wrong; stack traces are for bugs only.
try
{
    return await root.Parse(args).InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (KaDeployException e)
{
    Console.Error.WriteLine($"{name}: {e.Message}");
    return 1;
}
catch (OperationCanceledException)
{
    Console.Error.WriteLine($"{name}: interrupted");
    return 130;
}
catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or UnauthorizedAccessException)
{
    Console.Error.WriteLine($"{name}: {e.Message}");
    return 1;
}

// The name this process was started by. .NET reports the managed assembly as argv[0], so read the
// real one from /proc (the apphost and a NativeAOT binary keep the exec'd argv there).
static string InvokedName()
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
