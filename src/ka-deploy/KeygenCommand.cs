using System.CommandLine;
using KaDeploy.Security;

namespace KaDeploy.Cli;

/// <summary><c>ka-deploy keygen FILE</c>: a new pre-shared key for a cluster or a session (README "Security").</summary>
internal static class KeygenCommand
{
    public static Command Command()
    {
        var cmd = new Command("keygen", "Write a new random pre-shared key to FILE (mode 0600, never overwritten); give it to the server and every node with --key-file.");
        var file = new Argument<string>("FILE") { Description = "Where to write the key; must not exist" };
        cmd.Arguments.Add(file);
        cmd.SetAction(p =>
        {
            string path = p.GetValue(file)!;
            string fingerprint = PresharedKey.WriteNewKeyFile(path);
            // The fingerprint names the key in logs and reports; the key itself is printed nowhere.
            Console.Error.WriteLine($"ka-deploy keygen: wrote a new key to {path} (fingerprint {fingerprint}, mode 0600)");
            return 0;
        });
        return cmd;
    }
}
