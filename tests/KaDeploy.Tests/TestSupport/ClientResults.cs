using KaDeploy.Session;

namespace KaDeploy.Tests.TestSupport;

/// <summary>The outcome of every client of a session test, in node order.</summary>
public static class ClientResults
{
    /// <summary>
    /// Awaits each client; one that was cancelled or failed with a <see cref="KaDeployException"/> (a node the session
    /// lost) gives null, so the test can say which nodes verified and which did not.
    /// </summary>
    public static async Task<ClientResult?[]> CollectAsync(Task<ClientResult>[] clients)
    {
        var results = new ClientResult?[clients.Length];
        for (int i = 0; i < clients.Length; i++)
        {
            try { results[i] = await clients[i]; }
            catch (Exception e) when (e is OperationCanceledException or KaDeployException) { results[i] = null; }
        }
        return results;
    }
}
