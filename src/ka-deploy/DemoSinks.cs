using System.Diagnostics;
using KaDeploy.IO;
using KaDeploy.Payloads;

namespace KaDeploy.Cli;

/// <summary>The demo's knobs on a node's disk: a rate limit (to watch a session) and a failure part way (to see one).</summary>
internal static class DemoSinks
{
    public static IPayloadSink Wrap(IPayloadSink sink, long bytesPerSecond, long? failAfter) =>
        bytesPerSecond <= 0 && failAfter is null ? sink : new ShapedSink(sink, bytesPerSecond, failAfter);

    public static void WriteRandomFile(string path, long length)
    {
        using var f = new FileStream(path, FileMode.CreateNew, FileAccess.Write);
        var buffer = new byte[1 << 20];
        for (long left = length; left > 0; left -= buffer.Length)
        {
            System.Security.Cryptography.RandomNumberGenerator.Fill(buffer);
            f.Write(buffer, 0, (int)Math.Min(left, buffer.Length));
        }
    }

    private sealed class ShapedSink(IPayloadSink inner, long bytesPerSecond, long? failAfter) : IPayloadSink
    {
        public string Description => inner.Description + (failAfter is { } n ? $" (demo: fails after {n} bytes)" : "") + (bytesPerSecond > 0 ? $" (demo: {bytesPerSecond} B/s)" : "");

        public Task ConsumeAsync(Stream input, CancellationToken cancellationToken) =>
            inner.ConsumeAsync(new ShapedStream(input, bytesPerSecond, failAfter), cancellationToken);
    }

    private sealed class ShapedStream(Stream inner, long bytesPerSecond, long? failAfter) : SequentialReadStream
    {
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private long _read;

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            if (failAfter is { } limit && _read >= limit) throw new IOException("demo: this node's disk failed (--fail-node)");
            if (bytesPerSecond > 0)
            {
                buffer = buffer[..(int)Math.Min(buffer.Length, Math.Max(4096, bytesPerSecond / 20))];
                double due = (double)_read / bytesPerSecond;
                double ahead = due - _clock.Elapsed.TotalSeconds;
                if (ahead > 0) Thread.Sleep(TimeSpan.FromSeconds(ahead)); // a rate limit is a wait by definition
            }
            int n = inner.Read(buffer);
            _read += n;
            return n;
        }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(Read(buffer.Span));
    }
}
