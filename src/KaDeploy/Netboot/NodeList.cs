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
/// The node list as the boot service reads it: the same file and syntax as `ka-deploy server --nodes` for the
/// whole-node install (<see cref="KaDeploy.Install.NodeList"/>: <c>NAME [MAC] [ADDRESS[/PREFIX] | dhcp] [key=value...]</c>),
/// with what network boot adds: every node needs its MAC (nodes are found by it), and a static IPv4 address is also
/// the node's DHCP reservation, so addresses must be unique too.
/// </summary>
public static partial class NodeList
{
    [GeneratedRegex("^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$")]
    private static partial Regex MacPattern();

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
        var entries = KaDeploy.Install.NodeList.Parse(text, source);
        if (entries.Count == 0) throw new KaDeployException($"{source}: no nodes");
        var nodes = new List<NetbootNode>();
        var byAddress = new Dictionary<IPAddress, string>();
        foreach (var e in entries)
        {
            string where = $"{source}:{e.Line}";
            if (e.Mac.Length == 0) throw new KaDeployException($"{where}: {e.Name} has no MAC address (network boot finds nodes by MAC)");
            IPAddress? address = null;
            if (e.Address.Length > 0 && IPAddress.Parse(e.Address.Split('/')[0]) is { AddressFamily: System.Net.Sockets.AddressFamily.InterNetwork } a)
            {
                if (byAddress.TryGetValue(a, out var other)) throw new KaDeployException($"{where}: address {a} of {e.Name} is also {other}'s");
                byAddress[a] = e.Name;
                address = a;
            }
            nodes.Add(new NetbootNode(e.Name, e.Mac, address, e.Vars.Select(kv => kv).ToList()));
        }
        return nodes;
    }

    /// <summary>Normalises a MAC written with colons or hyphens, any case; null when it is not one.</summary>
    public static string? NormalizeMac(string text) =>
        MacPattern().IsMatch(text) ? text.Replace('-', ':').ToLower(CultureInfo.InvariantCulture) : null;
}
