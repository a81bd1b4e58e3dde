using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;

namespace KaDeploy.Netboot;

/// <summary>One node of the node list: its name, the MAC address it network-boots from, and optionally a fixed address.</summary>
/// <param name="Name">Host name given to the node (DHCP option 12, the clone's hostname).</param>
/// <param name="Mac">MAC address, lower case, colon separated (<c>52:54:00:12:34:56</c>).</param>
/// <param name="Address">Fixed IPv4 address handed out by DHCP, or null for one from the range.</param>
/// <param name="Settings">The line's free <c>key=value</c> fields, in order.</param>
public sealed record NetbootNode(string Name, string Mac, IPAddress? Address, IReadOnlyList<KeyValuePair<string, string>> Settings)
{
    /// <summary>The MAC as iPXE's <c>${mac:hexhyp}</c> writes it (<c>52-54-00-12-34-56</c>): the per-node file name.</summary>
    public string MacHyphens => Mac.Replace(':', '-');
}

/// <summary>
/// The node list read by the boot service: one node per line, fields separated by blanks, <c>#</c> starts a comment.
/// The first field is the name; the others are recognised by their shape: a MAC address
/// (<c>52:54:00:12:34:56</c> or with hyphens), an IPv4 address, or <c>key=value</c>. This is the same file
/// `ka-deploy server --nodes` reads (there the name orders the chain; the other fields are ignored).
/// </summary>
public static partial class NodeList
{
    [GeneratedRegex("^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")]
    private static partial Regex MacPattern();

    // RFC 1123 host label(s): what a DHCP host name and /etc/hostname can hold.
    [GeneratedRegex("^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")]
    private static partial Regex NamePattern();

    /// <summary>Reads and checks a node list file.</summary>
    /// <exception cref="KaDeployException">The file cannot be read or a line is wrong (named with its line number).</exception>
    public static IReadOnlyList<NetbootNode> Load(string path)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"node list {path}: {e.Message}");
        }
        return Parse(text, path);
    }

    /// <summary>Parses a node list; every node must have a MAC, names and MACs and addresses must be unique.</summary>
    /// <exception cref="KaDeployException">A line is wrong; the message names the source and line number.</exception>
    public static IReadOnlyList<NetbootNode> Parse(string text, string source)
    {
        ArgumentNullException.ThrowIfNull(text);
        var nodes = new List<NetbootNode>();
        var byName = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        var byMac = new Dictionary<string, int>(StringComparer.Ordinal);
        var byAddress = new Dictionary<IPAddress, int>();
        var lines = text.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            int lineNo = i + 1;
            string line = lines[i].Split('#')[0].Trim();
            if (line.Length == 0) continue;
            var fields = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            string where = $"{source}:{lineNo}";
            string name = fields[0];
            if (!NamePattern().IsMatch(name) || name.Length > 253)
                throw new KaDeployException($"{where}: '{name}' is not a valid host name");
            string? mac = null;
            IPAddress? address = null;
            var settings = new List<KeyValuePair<string, string>>();
            foreach (var f in fields.Skip(1))
            {
                if (MacPattern().IsMatch(f))
                {
                    if (mac is not null) throw new KaDeployException($"{where}: two MAC addresses for {name}");
                    mac = f.Replace('-', ':').ToLowerInvariant();
                }
                else if (f.Contains('=', StringComparison.Ordinal))
                {
                    int eq = f.IndexOf('=', StringComparison.Ordinal);
                    if (eq == 0) throw new KaDeployException($"{where}: '{f}' has no key");
                    settings.Add(new(f[..eq], f[(eq + 1)..]));
                }
                else if (IPAddress.TryParse(f, out var a) && a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork && f.Count(c => c == '.') == 3)
                {
                    if (address is not null) throw new KaDeployException($"{where}: two addresses for {name}");
                    address = a;
                }
                else
                {
                    throw new KaDeployException($"{where}: '{f}' is neither a MAC address, an IPv4 address nor key=value");
                }
            }
            if (mac is null) throw new KaDeployException($"{where}: {name} has no MAC address (network boot finds nodes by MAC)");
            if (byName.TryGetValue(name, out int n)) throw new KaDeployException($"{where}: duplicate name {name} (also on line {n})");
            if (byMac.TryGetValue(mac, out int m)) throw new KaDeployException($"{where}: duplicate MAC {mac} (also on line {m})");
            if (address is not null && byAddress.TryGetValue(address, out int d))
                throw new KaDeployException($"{where}: duplicate address {address} (also on line {d})");
            byName[name] = lineNo;
            byMac[mac] = lineNo;
            if (address is not null) byAddress[address] = lineNo;
            nodes.Add(new NetbootNode(name, mac, address, settings));
        }
        if (nodes.Count == 0) throw new KaDeployException($"{source}: no nodes");
        return nodes;
    }

    /// <summary>Normalises a MAC written with colons or hyphens, any case; null when it is not one.</summary>
    public static string? NormalizeMac(string text) =>
        MacPattern().IsMatch(text) ? text.Replace('-', ':').ToLower(CultureInfo.InvariantCulture) : null;
}
