using System.Text;

namespace KaDeploy.Reporting;

/// <summary>
/// The operator's terminal: log lines scroll, and a status block (the live view, or one progress line) stays
/// below them. Before a log line is written the block is erased, and it is drawn again after, so a log line never
/// lands in the middle of a progress line. When the output is not a terminal there is no block: status updates
/// are dropped (the caller logs plain lines instead). Thread-safe: the data path, the progress timer and log
/// callers all write through it.
/// </summary>
public sealed class ConsoleSurface : TextWriter
{
    private readonly TextWriter _out;
    private readonly object _gate = new();
    private readonly StringBuilder _partial = new();
    private readonly Func<string, bool>? _filter;
    private string[] _status = [];
    private int _drawnLines;

    /// <param name="output">Where everything goes (standard error).</param>
    /// <param name="terminal">True to keep a status block in place with ANSI cursor movement.</param>
    /// <param name="filter">Log lines for which this returns false are dropped (--quiet); null keeps all.</param>
    public ConsoleSurface(TextWriter output, bool terminal, Func<string, bool>? filter = null)
    {
        ArgumentNullException.ThrowIfNull(output);
        _out = output;
        IsTerminal = terminal;
        _filter = filter;
    }

    /// <summary>True when a status block can be kept in place.</summary>
    public bool IsTerminal { get; }

    /// <inheritdoc/>
    public override Encoding Encoding => _out.Encoding;

    /// <summary>Replaces the status block (one string per line) and redraws it. Ignored when not a terminal.</summary>
    public void SetStatus(IReadOnlyList<string> lines)
    {
        if (!IsTerminal) return;
        lock (_gate)
        {
            _status = [.. lines];
            var sb = new StringBuilder();
            Erase(sb);
            Draw(sb);
            _out.Write(sb.ToString());
            _out.Flush();
        }
    }

    /// <summary>Erases the status block for good (the view is finished), leaving its last state on screen when <paramref name="keep"/>.</summary>
    public void EndStatus(bool keep)
    {
        lock (_gate)
        {
            if (!keep && IsTerminal)
            {
                var sb = new StringBuilder();
                Erase(sb);
                _out.Write(sb.ToString());
            }
            _status = [];
            _drawnLines = 0;
            _out.Flush();
        }
    }

    private void Erase(StringBuilder sb)
    {
        if (_drawnLines == 0) return;
        // The cursor sits at the start of the line below the block: go up to its first line and clear downwards.
        sb.Append('\r');
        sb.Append("\u001b[").Append(_drawnLines).Append('A');
        sb.Append("\u001b[J");
        _drawnLines = 0;
    }

    private void Draw(StringBuilder sb)
    {
        foreach (var line in _status) sb.Append(line).Append("\u001b[K\n");
        _drawnLines = _status.Length;
    }

    /// <inheritdoc/>
    public override void Write(char value)
    {
        lock (_gate)
        {
            if (value == '\n') FlushLine();
            else _partial.Append(value);
        }
    }

    /// <inheritdoc/>
    public override void Write(string? value)
    {
        if (value is null) return;
        lock (_gate)
        {
            int start = 0;
            for (int i = value.IndexOf('\n'); i >= 0; i = value.IndexOf('\n', start))
            {
                _partial.Append(value, start, i - start);
                FlushLine();
                start = i + 1;
            }
            _partial.Append(value, start, value.Length - start);
        }
    }

    /// <inheritdoc/>
    public override void WriteLine(string? value)
    {
        lock (_gate)
        {
            Write(value);
            FlushLine();
        }
    }

    /// <inheritdoc/>
    public override void WriteLine() => Write('\n');

    /// <summary>Writes a line that --quiet must not drop (an error, the verdict).</summary>
    public void WriteLineAlways(string line)
    {
        lock (_gate)
        {
            var sb = new StringBuilder();
            Erase(sb);
            sb.Append(line).Append('\n');
            Draw(sb);
            _out.Write(sb.ToString());
            _out.Flush();
        }
    }

    private void FlushLine()
    {
        string line = _partial.ToString().TrimEnd('\r');
        _partial.Clear();
        if (_filter is not null && !_filter(line)) return;
        var sb = new StringBuilder();
        Erase(sb);
        sb.Append(line).Append('\n');
        Draw(sb);
        _out.Write(sb.ToString());
        _out.Flush();
    }

    /// <inheritdoc/>
    public override void Flush()
    {
        lock (_gate) _out.Flush();
    }
}
