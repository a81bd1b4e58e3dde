namespace KaDeploy.Tests.TestSupport;

/// <summary>
/// A synchronization context that counts posts and runs each at once on the posting thread, so a test stays on one
/// thread: a post means some await resumed on its caller's context (a dropped <c>ConfigureAwait(false)</c>).
/// </summary>
public sealed class CountingContext : SynchronizationContext
{
    /// <summary>Posts so far.</summary>
    public int Posts;

    public override void Post(SendOrPostCallback d, object? state)
    {
        Posts++;
        d(state);
    }

    public override void Send(SendOrPostCallback d, object? state) => d(state);
}
