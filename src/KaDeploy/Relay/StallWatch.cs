namespace KaDeploy.Relay;

/// <summary>
/// Once a second, looks for the consumer that has held a full ring back for longer than the limit and
/// gives up on it (<see cref="RingCursor.Evict"/>), so that one hung child or one dead disk does not stop
/// the whole chain. A consumer that is merely slow keeps moving and is never evicted.
/// </summary>
public static class StallWatch
{
    public static async Task RunAsync(RelayRing ring, TimeSpan limit, Action<string> log, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(ring);
        if (limit <= TimeSpan.Zero) return;
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(Math.Min(1, limit.TotalSeconds / 2)));
        try
        {
            while (await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false))
            {
                if (ring.FindStalled(limit) is not { } stalled) continue;
                string reason = $"{stalled.Name} took nothing for {Describe(limit)} while the relay buffer was full; given up so the others go on";
                log(reason);
                stalled.Evict(reason);
            }
        }
        catch (OperationCanceledException) { }
    }

    /// <summary>"500 ms", "1.5 s", "60 s": a sub-second limit was printed as "0 s".</summary>
    internal static string Describe(TimeSpan limit) =>
        limit < TimeSpan.FromSeconds(1)
            ? limit.TotalMilliseconds.ToString("0.#", System.Globalization.CultureInfo.InvariantCulture) + " ms"
            : limit.TotalSeconds.ToString("0.#", System.Globalization.CultureInfo.InvariantCulture) + " s";
}
