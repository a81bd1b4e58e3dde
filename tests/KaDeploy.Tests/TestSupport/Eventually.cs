namespace KaDeploy.Tests.TestSupport;

/// <summary>
/// Waiting on a condition instead of sleeping: polls until it holds and fails with what was awaited
/// when the generous deadline passes. The deadline only bounds a broken run; a passing run never
/// waits for it, so a loaded machine makes tests slower, not red.
/// </summary>
public static class Eventually
{
    /// <summary>
    /// Default bound: long enough for a machine shared by many builds. <c>KD_TEST_DEADLINE_SECONDS</c> shortens it for
    /// mutation runs, where a mutant that breaks a wait would otherwise cost the whole bound (tests/README.md, Stryker).
    /// </summary>
    public static readonly TimeSpan Deadline = TimeSpan.FromSeconds(
        int.TryParse(Environment.GetEnvironmentVariable("KD_TEST_DEADLINE_SECONDS"), out int s) && s > 0 ? s : 60);

    public static async Task HoldsAsync(Func<bool> condition, string what, TimeSpan? deadline = null)
    {
        using var timeout = new CancellationTokenSource(deadline ?? Deadline);
        while (!condition())
        {
            if (timeout.IsCancellationRequested) throw new TimeoutException($"gave up waiting for {what}");
            await Task.Delay(10, CancellationToken.None);
        }
    }
}
