using System.Net;

namespace KaDeploy.Topology;

/// <summary>A registered node as the planner sees it.</summary>
public sealed record NodeEndpoint(int NodeId, string Name, IPAddress Address, int DataPort);

/// <summary>Where one node sits: its parent (0 = the server) and its children, in order.</summary>
public sealed record NodePlacement(NodeEndpoint Node, int ParentId, IReadOnlyList<int> ChildIds, int Depth);

/// <summary>
/// Lays nodes out as a balanced tree of the given arity with the server at the root
/// (arity 1 is a chain). Nodes are placed breadth first in the order given, so the first
/// ones are nearest the server; <see cref="OrderByAddress"/> gives the original's order
/// ("to minimise inter-switch communication").
/// </summary>
public static class TreePlanner
{
    /// <summary>Id the server uses for itself in placements.</summary>
    public const int ServerId = 0;

    /// <summary>Places <paramref name="ordered"/> in a balanced tree. O(N).</summary>
    public static IReadOnlyList<NodePlacement> Plan(IReadOnlyList<NodeEndpoint> ordered, int arity)
    {
        ArgumentNullException.ThrowIfNull(ordered);
        ArgumentOutOfRangeException.ThrowIfLessThan(arity, 1);
        // Position 0 is the server; node at position p (1-based) has parent position (p - 1) / arity
        // and children positions p * arity + 1 .. p * arity + arity.
        int n = ordered.Count;
        var result = new NodePlacement[n];
        for (int i = 0; i < n; i++)
        {
            int p = i + 1;
            int parentPos = (p - 1) / arity;
            int parentId = parentPos == 0 ? ServerId : ordered[parentPos - 1].NodeId;
            var children = new List<int>(arity);
            for (long c = (long)p * arity + 1; c <= (long)p * arity + arity && c <= n; c++)
                children.Add(ordered[(int)c - 1].NodeId);
            int depth = 0;
            for (int q = p; q > 0; q = (q - 1) / arity) depth++;
            result[i] = new NodePlacement(ordered[i], parentId, children, depth);
        }
        return result;
    }

    /// <summary>The children of the server (positions 1..arity).</summary>
    public static IReadOnlyList<int> RootChildren(IReadOnlyList<NodeEndpoint> ordered, int arity) =>
        ordered.Take(arity).Select(n => n.NodeId).ToArray();

    /// <summary>Sorts by IP address bytes (IPv4 before IPv6), then by data port.</summary>
    public static IReadOnlyList<NodeEndpoint> OrderByAddress(IEnumerable<NodeEndpoint> nodes) =>
        nodes.OrderBy(n => n.Address, AddressComparer.Instance).ThenBy(n => n.DataPort).ThenBy(n => n.NodeId).ToArray();

    /// <summary>
    /// Orders by a list of names or addresses (a --nodes file); nodes it does not mention follow in address order.
    /// </summary>
    public static IReadOnlyList<NodeEndpoint> OrderByList(IEnumerable<NodeEndpoint> nodes, IReadOnlyList<string> order)
    {
        var rank = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        for (int i = 0; i < order.Count; i++) rank.TryAdd(order[i], i);
        int Rank(NodeEndpoint n) =>
            rank.TryGetValue(n.Name, out int r) || rank.TryGetValue(n.Address.ToString(), out r) ? r : int.MaxValue;
        return nodes.OrderBy(Rank).ThenBy(n => n.Address, AddressComparer.Instance).ThenBy(n => n.DataPort).ToArray();
    }

    private sealed class AddressComparer : IComparer<IPAddress>
    {
        public static readonly AddressComparer Instance = new();
        public int Compare(IPAddress? x, IPAddress? y)
        {
            if (ReferenceEquals(x, y)) return 0;
            if (x is null) return -1;
            if (y is null) return 1;
            if (x.IsIPv4MappedToIPv6) x = x.MapToIPv4();
            if (y.IsIPv4MappedToIPv6) y = y.MapToIPv4();
            Span<byte> a = stackalloc byte[16], b = stackalloc byte[16];
            x.TryWriteBytes(a, out int la);
            y.TryWriteBytes(b, out int lb);
            if (la != lb) return la.CompareTo(lb);
            return a[..la].SequenceCompareTo(b[..lb]);
        }
    }
}
