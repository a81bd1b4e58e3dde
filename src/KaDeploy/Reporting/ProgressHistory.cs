namespace KaDeploy.Reporting;

/// <summary>
/// A node's progress over time, bounded: at most <see cref="MaxSamples"/> points however long the session runs.
/// Samples are taken at an interval that doubles each time the list fills, and every other sample is then dropped,
/// so the points stay evenly spread over the whole run (a day-long session keeps as many as a minute-long one).
/// </summary>
public sealed class ProgressHistory
{
    /// <summary>The bound on samples per node.</summary>
    public const int MaxSamples = 256;

    private readonly List<ProgressSample> _samples;
    private double _interval;

    /// <param name="samples">The list to fill (a report row's, so the report carries it).</param>
    /// <param name="interval">Seconds between samples at first.</param>
    public ProgressHistory(List<ProgressSample> samples, double interval = 0.25)
    {
        ArgumentNullException.ThrowIfNull(samples);
        _samples = samples;
        _interval = interval;
    }

    /// <summary>Records <paramref name="bytes"/> at <paramref name="seconds"/> if the interval has passed (or <paramref name="force"/>).</summary>
    public void Add(double seconds, long bytes, bool force = false)
    {
        lock (_samples)
        {
            if (_samples.Count > 0 && !force)
            {
                var last = _samples[^1];
                if (seconds - last.Seconds < _interval) return;
            }
            _samples.Add(new ProgressSample(Math.Round(seconds, 3), bytes));
            if (_samples.Count < MaxSamples) return;
            // Full: keep every other sample (always the first and the newest), and sample half as often from now on.
            var kept = new List<ProgressSample>(MaxSamples / 2 + 1);
            for (int i = 0; i < _samples.Count - 1; i += 2) kept.Add(_samples[i]);
            kept.Add(_samples[^1]);
            _samples.Clear();
            _samples.AddRange(kept);
            _interval *= 2;
        }
    }
}
