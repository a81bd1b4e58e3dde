namespace KaDeploy.Session;

/// <summary>
/// The server's registered nodes, in registration order, by id and by parent. Repairs walk a node's ancestors and list
/// its children, and the slow-node check lists the children of every held node, all under the server's lock: with a
/// scan of every node per lookup, a chain of hundreds of nodes made each repair O(N²). Every lookup here costs what it
/// returns. Not thread-safe: the server uses it under its gate.
/// </summary>
internal sealed class NodeTable
{
    private readonly List<ServerNode> _order = [];
    private readonly Dictionary<int, ServerNode> _byId = [];
    private readonly Dictionary<int, List<ServerNode>> _children = [];

    /// <summary>How many nodes are registered.</summary>
    public int Count => _order.Count;

    /// <summary>A copy of the nodes in registration order.</summary>
    public ServerNode[] ToArray() => [.. _order];

    /// <summary>Registers a node under its current parent.</summary>
    public void Add(ServerNode node)
    {
        _byId.Add(node.Id, node);
        _order.Add(node);
        Link(node);
    }

    /// <summary>Forgets a node (one that left before the start); false if it was not registered.</summary>
    public bool Remove(ServerNode node)
    {
        if (!_byId.Remove(node.Id)) return false;
        _order.Remove(node);
        Unlink(node);
        return true;
    }

    /// <summary>The node with this id, if registered.</summary>
    public ServerNode? Find(int id) => _byId.GetValueOrDefault(id);

    /// <summary>The first node, in registration order, that matches (a scan: for rare events such as a failed node's return).</summary>
    public ServerNode? FindFirst(Predicate<ServerNode> match) => _order.Find(match);

    /// <summary>The nodes whose parent is <paramref name="parentId"/> now (0: the server), whatever their state. Live: copy it
    /// before changing a parent.</summary>
    public IReadOnlyList<ServerNode> ChildrenOf(int parentId) =>
        _children.TryGetValue(parentId, out var c) ? c : [];

    /// <summary>Puts a node under another parent (the only way a registered node's parent changes, so the index stays true).</summary>
    public void SetParent(ServerNode node, int parentId)
    {
        if (node.ParentId == parentId) return;
        Unlink(node);
        node.ParentId = parentId;
        Link(node);
    }

    private void Link(ServerNode node)
    {
        if (!_children.TryGetValue(node.ParentId, out var list)) _children[node.ParentId] = list = [];
        list.Add(node);
    }

    private void Unlink(ServerNode node)
    {
        if (_children.TryGetValue(node.ParentId, out var list) && list.Remove(node) && list.Count == 0) _children.Remove(node.ParentId);
    }
}
