using System.Diagnostics;
using System.Globalization;

namespace KaDeploy.Reporting;

/// <summary>
/// Live progress (bytes, rate, ETA): redrawn in place twice a second on a terminal, a plain log
/// line every few seconds otherwise. Runs on a timer; the data path never waits for it.
/// </summary>
public sealed class ProgressLine : IAsyncDisposable
{
    private readonly Func<(long Done, long? Total, string Extra)> _sample;
    private readonly TextWriter _out;
    private readonly bool _terminal;
    private readonly string _label;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private long _lastBytes;
    private double _lastSeconds;

    public ProgressLine(string label, Func<(long Done, long? Total, string Extra)> sample, TextWriter output, bool terminal)
    {
        _label = label;
        _sample = sample;
        _out = output;
        _terminal = terminal;
        _loop = RunAsync(_stop.Token);
    }

    private async Task RunAsync(CancellationToken cancellationToken)
    {
        var period = TimeSpan.FromSeconds(_terminal ? 0.5 : 5);
        using var timer = new PeriodicTimer(period);
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false)) Draw(final: false);
        }
        catch (OperationCanceledException) { }
    }

    private void Draw(bool final)
    {
        var (done, total, extra) = _sample();
        double now = _clock.Elapsed.TotalSeconds;
        double rate = now - _lastSeconds > 0 ? (done - _lastBytes) / (now - _lastSeconds) : 0;
        if (final) rate = now > 0 ? done / now : 0;
        _lastBytes = done;
        _lastSeconds = now;
        var inv = CultureInfo.InvariantCulture;
        // A stream longer than its estimate (a tree that grew meanwhile) shows no percentage past 100 % and no ETA.
        string line = total is > 0 && done <= total
            ? string.Format(inv, "{0}: {1} / {2} ({3:0.0}%) {4}/s ETA {5}{6}", _label, Size(done), Size(total.Value),
                100.0 * done / total.Value, Size((long)rate), Eta(total.Value - done, rate), extra)
            : string.Format(inv, "{0}: {1}{2} {3}/s{4}", _label, Size(done), total is > 0 ? " (past the estimate)" : "", Size((long)rate), extra);
        if (_terminal && _out is ConsoleSurface surface)
        {
            // The surface erases the line before any log line and draws it again after: no log text glued to it.
            surface.SetStatus([line]);
            if (final) surface.EndStatus(keep: true);
            return;
        }
        if (_terminal) _out.Write("\r\u001b[K" + line + (final ? "\n" : ""));
        else _out.WriteLine(line);
        _out.Flush();
    }

    private static string Eta(long left, double rate) =>
        rate <= 0 || left <= 0 ? "--:--" : TimeSpan.FromSeconds(Math.Min(left / rate, 359999)).ToString(@"hh\:mm\:ss", CultureInfo.InvariantCulture);

    /// <summary>Human-readable size in binary units.</summary>
    public static string Size(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        return u == 0 ? $"{bytes} B" : v.ToString("0.0", CultureInfo.InvariantCulture) + " " + units[u];
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        await _loop.ConfigureAwait(false);
        if (_terminal) Draw(final: true);
        _stop.Dispose();
    }
}
