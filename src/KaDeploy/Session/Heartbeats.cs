namespace KaDeploy.Session;

/// <summary>Process-wide settings that keep heartbeats on time.</summary>
internal static class Heartbeats
{
    /// <summary>
    /// Sinks, compressors and the tar writer block pool threads in synchronous reads and writes on the
    /// ring. On a 2-core node the pool then injects threads only slowly (about one per second), and a
    /// heartbeat timer waiting for a thread is late: a failure timeout of 3 s would be missed by a node
    /// that is merely busy. A few more threads up front cost nothing while idle.
    /// </summary>
    public static void ReserveThreads()
    {
        ThreadPool.GetMinThreads(out int workers, out int io);
        if (workers < 32) ThreadPool.SetMinThreads(32, Math.Max(io, 32));
    }
}
