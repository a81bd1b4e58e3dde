using System.Net;
using System.Text.RegularExpressions;

namespace KaDeploy.Install;

/// <summary>
/// The node list (--nodes): one node per line, in chain order; '#' starts a comment.
/// <code>
/// NAME [MAC] [ADDRESS[/PREFIX] | dhcp] [key=value ...]
/// node1
/// node2 52:54:00:12:34:02 198.18.1.2/24 gateway=198.18.1.1 dns=198.18.1.1 rack=3
/// node3 52:54:00:12:34:03 dhcp role=storage
/// </code>
/// The first field is the name (the original's one-name-per-line files stay valid); a MAC (six hex pairs with
/// ':' or '-') and an IPv4/IPv6 address (with an optional prefix, default /24 or /64) are recognised by their
/// form; everything else must be key=value. gateway= and dns= (comma separated) configure a static address;
/// every key=value reaches the hooks as an environment variable.
/// </summary>
public static partial class NodeList
{
    /// <summary>Reads and checks a node list file.</summary>
    public static List<NodeEntry> Load(string path)
    {
        try
        {
            return Parse(File.ReadAllText(path), path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"--nodes {path}: {e.Message}");
        }
    }

    /// <summary>Parses a node list; errors name the line.</summary>
    public static List<NodeEntry> Parse(string text, string origin = "nodes")
    {
        var nodes = new List<NodeEntry>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        var macs = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (where, lineNumber, t) in ConfigLines.Read(text, origin))
        {
            var n = new NodeEntry { Name = t[0], Index = nodes.Count + 1, Line = lineNumber };
            if (!HostName().IsMatch(n.Name)) throw new KaDeployException($"{where}: '{n.Name}' is not a valid host name");
            if (!names.Add(n.Name)) throw new KaDeployException($"{where}: node {n.Name} is listed twice");
            for (int k = 1; k < t.Length; k++)
            {
                string f = t[k];
                int eq = f.IndexOf('=');
                if (eq > 0)
                {
                    string key = f[..eq];
                    if (!VarName().IsMatch(key)) throw new KaDeployException($"{where}: '{key}' is not a valid variable name (letters, digits, _)");
                    string value = f[(eq + 1)..];
                    n.Vars[key] = value;
                    if (key == "gateway") n.Gateway = CheckAddress(value, where);
                    if (key == "dns") n.Dns = [.. value.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(d => CheckAddress(d, where))];
                    if (key == "mac") n.Mac = NormaliseMac(value, where);
                    continue;
                }
                if (Mac().IsMatch(f))
                {
                    if (n.Mac.Length > 0) throw new KaDeployException($"{where}: two MAC addresses");
                    n.Mac = NormaliseMac(f, where);
                    continue;
                }
                if (f == "dhcp")
                {
                    n.Address = "";
                    continue;
                }
                string addr = f.Split('/')[0];
                if (IPAddress.TryParse(addr, out var ip))
                {
                    if (n.Address.Length > 0) throw new KaDeployException($"{where}: two addresses");
                    int max = ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128;
                    int prefix = max == 32 ? 24 : 64;
                    if (f.Contains('/') && (!int.TryParse(f.Split('/')[1], out prefix) || prefix < 1 || prefix > max))
                        throw new KaDeployException($"{where}: bad prefix in '{f}'");
                    n.Address = $"{ip}/{prefix}";
                    continue;
                }
                throw new KaDeployException($"{where}: '{f}' is not a MAC, an address, 'dhcp' or key=value");
            }
            if (n.Mac.Length > 0 && !macs.Add(n.Mac)) throw new KaDeployException($"{where}: MAC {n.Mac} is listed twice");
            nodes.Add(n);
        }
        return nodes;
    }

    /// <summary>Finds this node: by name first, then by any of its MAC addresses.</summary>
    public static NodeEntry Find(IReadOnlyList<NodeEntry> nodes, string name, IEnumerable<string> macs)
    {
        var byName = nodes.FirstOrDefault(n => n.Name == name);
        if (byName is not null) return byName;
        var mine = macs.Select(m => m.ToLowerInvariant()).ToHashSet();
        var byMac = nodes.FirstOrDefault(n => n.Mac.Length > 0 && mine.Contains(n.Mac));
        return byMac ?? throw new KaDeployException(
            $"node '{name}' (MAC {(mine.Count == 0 ? "none" : string.Join(", ", mine.Order()))}) is not in the node list; nothing was written");
    }

    /// <summary>This machine's MAC addresses (from /sys/class/net), for <see cref="Find"/>.</summary>
    public static IEnumerable<string> LocalMacs()
    {
        if (!Directory.Exists("/sys/class/net")) yield break;
        foreach (var dir in Directory.EnumerateDirectories("/sys/class/net"))
        {
            string mac;
            try { mac = File.ReadAllText(Path.Combine(dir, "address")).Trim(); }
            catch (IOException) { continue; }
            if (mac.Length == 17 && mac != "00:00:00:00:00:00") yield return mac;
        }
    }

    private static string NormaliseMac(string mac, string where) =>
        Mac().IsMatch(mac) ? mac.Replace('-', ':').ToLowerInvariant() : throw new KaDeployException($"{where}: '{mac}' is not a MAC address");

    private static string CheckAddress(string a, string where) =>
        IPAddress.TryParse(a, out var ip) ? ip.ToString() : throw new KaDeployException($"{where}: '{a}' is not an IP address");

    [GeneratedRegex("^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
    private static partial Regex HostName();

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]*$")]
    private static partial Regex VarName();

    [GeneratedRegex("^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")]
    private static partial Regex Mac();
}
