namespace KaDeploy.Install;

/// <summary>
/// The line syntax the layout and node list files share: one entry per line, '#' starts a comment, fields are separated
/// by blanks or tabs, empty lines are skipped. Each entry comes with "FILE:LINE" for the messages that name it.
/// </summary>
internal static class ConfigLines
{
    /// <summary>The non-empty lines of <paramref name="text"/> as fields, with their place and 1-based line number.</summary>
    public static IEnumerable<(string Where, int Line, string[] Fields)> Read(string text, string origin)
    {
        string[] lines = text.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            string[] fields = lines[i].Split('#')[0].Split((char[])[' ', '\t', '\r'], StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length > 0) yield return ($"{origin}:{i + 1}", i + 1, fields);
        }
    }
}
