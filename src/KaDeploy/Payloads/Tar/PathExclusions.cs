namespace KaDeploy.Payloads.Tar;

/// <summary>
/// Paths to leave out of a tree, relative to its root ("proc/*", "var/cache/apt", "mnt/target").
/// A pattern matches a whole relative path; '*' and '?' do not cross '/', "**" does. An excluded directory
/// is left out with everything under it.
/// </summary>
public sealed class PathExclusions
{
    private readonly HashSet<string> _exact = new(StringComparer.Ordinal);
    private readonly List<string> _globs = [];

    /// <summary>Normalizes each entry: absolute paths must lie under <paramref name="root"/>.</summary>
    public PathExclusions(string root, IEnumerable<string> patterns)
    {
        ArgumentNullException.ThrowIfNull(root);
        ArgumentNullException.ThrowIfNull(patterns);
        string fullRoot = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        foreach (string raw in patterns)
        {
            if (string.IsNullOrWhiteSpace(raw)) continue;
            string p = raw;
            if (p.StartsWith('/'))
            {
                string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(p));
                if (fullRoot == "/") p = full.TrimStart('/');
                else if (full == fullRoot) continue; // excluding the root itself means nothing here
                else if (full.StartsWith(fullRoot + "/", StringComparison.Ordinal)) p = full[(fullRoot.Length + 1)..];
                else continue; // outside the tree: cannot match anything in it
            }
            p = p.Trim('/');
            while (p.StartsWith("./", StringComparison.Ordinal)) p = p[2..];
            if (p.Length == 0) continue;
            if (p.AsSpan().IndexOfAny('*', '?', '[') >= 0) _globs.Add(p);
            else _exact.Add(p);
        }
    }

    /// <summary>Nothing excluded.</summary>
    public static PathExclusions None { get; } = new("/", []);

    /// <summary>The patterns after normalization (for logs).</summary>
    public IEnumerable<string> Patterns => _exact.Concat(_globs);

    /// <summary>True when nothing is excluded (the walk then skips the check and its per-entry string).</summary>
    public bool IsEmpty => _exact.Count == 0 && _globs.Count == 0;

    /// <summary>True if the relative path (no leading "./" or "/") is excluded.</summary>
    public bool IsExcluded(string relativePath)
    {
        if (_exact.Contains(relativePath)) return true;
        foreach (string g in _globs)
        {
            if (Glob(g, relativePath)) return true;
        }
        return false;
    }

    internal static bool Glob(ReadOnlySpan<char> pattern, ReadOnlySpan<char> text)
    {
        while (!pattern.IsEmpty)
        {
            char c = pattern[0];
            if (c == '*')
            {
                bool deep = pattern.Length > 1 && pattern[1] == '*';
                ReadOnlySpan<char> rest = pattern[(deep ? 2 : 1)..];
                for (int i = 0; i <= text.Length; i++)
                {
                    if (Glob(rest, text[i..])) return true;
                    if (i < text.Length && !deep && text[i] == '/') return false;
                }
                return false;
            }
            if (text.IsEmpty) return false;
            if (c == '?')
            {
                if (text[0] == '/') return false;
            }
            else if (c == '[')
            {
                int close = pattern[1..].IndexOf(']');
                if (close < 0) { if (text[0] != '[') return false; }
                else
                {
                    ReadOnlySpan<char> set = pattern.Slice(1, close);
                    bool negate = set.Length > 0 && (set[0] == '!' || set[0] == '^');
                    if (negate) set = set[1..];
                    bool hit = false;
                    for (int i = 0; i < set.Length; i++)
                    {
                        if (i + 2 < set.Length && set[i + 1] == '-') { hit |= text[0] >= set[i] && text[0] <= set[i + 2]; i += 2; }
                        else hit |= text[0] == set[i];
                    }
                    if (hit == negate || text[0] == '/') return false;
                    pattern = pattern[(close + 2)..];
                    text = text[1..];
                    continue;
                }
            }
            else if (c != text[0])
            {
                return false;
            }
            pattern = pattern[1..];
            text = text[1..];
        }
        return text.IsEmpty;
    }
}
