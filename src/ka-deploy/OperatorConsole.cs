using System.CommandLine;
using KaDeploy.Reporting;
using KaDeploy.Session;

namespace KaDeploy.Cli;

/// <summary>How the operator wants to watch: --quiet, --no-progress, --events json.</summary>
internal sealed record ViewChoice(bool Quiet, bool NoProgress, bool EventsJson);

/// <summary>
/// What the operator sees. On a terminal: log lines scrolling above a live view of the cluster (one row per node,
/// an overall bar, the slowest node highlighted), redrawn twice a second. Not on a terminal: the log lines and one
/// progress line every 5 s. --quiet: warnings, errors and the summary only. --events json: one JSON object per line
/// on standard output (the summary table then goes to standard error).
/// </summary>
internal sealed class OperatorConsole : IDisposable
{
    private readonly ViewChoice _choice;
    private readonly ConsoleSurface _surface;
    private readonly bool _terminal;
    private readonly EventStream? _events;

    public OperatorConsole(ViewChoice choice, string program)
    {
        _choice = choice;
        _terminal = !Console.IsErrorRedirected && Environment.GetEnvironmentVariable("TERM") is not (null or "" or "dumb");
        _surface = new ConsoleSurface(Console.Error, _terminal && !choice.Quiet && !choice.NoProgress, choice.Quiet ? Important : null);
        _events = choice.EventsJson ? new EventStream(Console.Out) : null;
        _ = program;
    }

    /// <summary>Adds the view options to a command; the returned reader gets the choice from a parse result.</summary>
    public static Func<ParseResult, ViewChoice> AddOptionsCore(Command cmd, bool events)
    {
        var quiet = Opt.Flag("--quiet", "Only warnings, errors and the summary: no progress, no informational lines", "-q");
        var noProgress = Opt.Flag("--no-progress", "No live view or progress lines");
        cmd.Options.Add(quiet);
        cmd.Options.Add(noProgress);
        Option<string?>? eventsOption = null;
        if (events)
        {
            eventsOption = Opt.Choice("--events", "Also write the session as events, one JSON object per line, on standard output", ["json"], null);
            cmd.Options.Add(eventsOption);
        }
        return p => new ViewChoice(p.GetValue(quiet), p.GetValue(noProgress), eventsOption is not null && p.GetValue(eventsOption) == "json");
    }

    /// <summary>Adds the view options; <c>.Read(parseResult)</c> gives the choice.</summary>
    public static ViewReader AddOptions(Command cmd, bool events = true) => new(AddOptionsCore(cmd, events));

    /// <summary>Reads the view choice from a parse result.</summary>
    internal sealed class ViewReader(Func<ParseResult, ViewChoice> read)
    {
        public ViewChoice Read(ParseResult p) => read(p);
    }

    /// <summary>Where log lines go (they scroll above the live view).</summary>
    public ConsoleSurface Log => _surface;

    /// <summary>For the client's own progress line: in place on a terminal, periodic lines otherwise, none when quiet.</summary>
    public bool? ClientProgress => _choice.Quiet || _choice.NoProgress ? null : _terminal;

    /// <summary>An error or verdict line: shown even with --quiet.</summary>
    public void Error(string line) => _surface.WriteLineAlways(line);

    // --quiet keeps what an operator must act on.
    private static bool Important(string line) =>
        line.Contains("warning", StringComparison.OrdinalIgnoreCase) || line.Contains("error", StringComparison.OrdinalIgnoreCase)
        || line.Contains("fail", StringComparison.OrdinalIgnoreCase) || line.Contains("lost", StringComparison.OrdinalIgnoreCase)
        || line.Contains("refused", StringComparison.OrdinalIgnoreCase) || line.Contains("abort", StringComparison.OrdinalIgnoreCase)
        || line.Contains("cannot", StringComparison.OrdinalIgnoreCase) || line.Contains("stall", StringComparison.OrdinalIgnoreCase);

    /// <summary>Runs the server while showing it; returns its report. <paramref name="parts"/>: a whole-node install's
    /// parts as they stand, shown in the live view and the progress lines.</summary>
    public async Task<SessionReport> RunServerAsync(DeployServer server, CancellationToken ct, Func<IReadOnlyList<PartReport>>? parts = null)
    {
        var run = server.RunAsync(ct);
        bool live = _surface.IsTerminal;
        bool lines = !_terminal && !_choice.Quiet && !_choice.NoProgress;
        if (!live && !lines && _events is null) return await run.ConfigureAwait(false);
        var view = new LiveView(color: live);
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(500));
        double lastLine = 0;
        while (true)
        {
            var tick = timer.WaitForNextTickAsync(ct).AsTask();
            if (await Task.WhenAny(run, tick).ConfigureAwait(false) == run) break;
            var s = server.Snapshot();
            if (parts is not null) s = s with { Parts = parts() };
            view.Update(s);
            _events?.Update(s);
            if (live) _surface.SetStatus(view.Render(s, Width(), Height()));
            else if (lines && s.Phase == "streaming" && s.Seconds - lastLine >= 5)
            {
                lastLine = s.Seconds;
                _surface.WriteLine("ka-deploy server: " + view.RenderLine(s));
            }
        }
        var final = server.Snapshot();
        view.Update(final);
        if (live)
        {
            _surface.SetStatus(view.Render(final, Width(), Height()));
            _surface.EndStatus(keep: false); // the summary table says it all, in tree order
        }
        return await run.ConfigureAwait(false);
    }

    /// <summary>The summary table on standard output (standard error with --events json), and the summary event.</summary>
    public void Summary(SessionReport report)
    {
        if (_events is not null)
        {
            _events.Summary(report);
            _surface.WriteLineAlways(report.FormatTable().TrimEnd('\n'));
        }
        else Console.Out.Write(report.FormatTable());
    }

    private static int Width()
    {
        try { return Console.WindowWidth > 0 ? Console.WindowWidth : 120; }
        catch (IOException) { return 120; }
    }

    private static int Height()
    {
        // Leave room for the log lines above the view.
        try { return Console.WindowHeight > 0 ? Math.Max(6, Console.WindowHeight - 6) : 30; }
        catch (IOException) { return 30; }
    }

    public void Dispose() => _surface.Flush();
}
