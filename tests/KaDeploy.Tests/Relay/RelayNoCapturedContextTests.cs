using System.Security.Cryptography;
using KaDeploy.IO;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// The relay's stream code never resumes on its caller's <see cref="SynchronizationContext"/> (a sink that blocks on it
/// from a single-threaded context must not deadlock). As in <c>Protocol/NoCapturedContextTests</c>: each path is run once
/// per stream operation with that one left pending, started under a counting context and released without one, so a
/// dropped <c>ConfigureAwait(false)</c> on any await that can be the first to suspend shows as a post. One thread, no timing.
/// (The ring's own waits complete through a semaphore that always resumes on the thread pool: not covered here.)
/// </summary>
public class RelayNoCapturedContextTests
{
    /// <summary>Operation number <see cref="PendAt"/> among all the streams sharing these steps stays pending until released.</summary>
    private sealed class Steps(int pendAt)
    {
        private readonly Queue<TaskCompletionSource> _pending = new();
        private int _operations;
        public int PendAt => pendAt;
        public bool Pended { get; private set; }

        public async Task Step()
        {
            if (_operations++ != pendAt) return;
            Pended = true;
            var t = new TaskCompletionSource();
            _pending.Enqueue(t);
            await t.Task.ConfigureAwait(false);
        }

        public bool ReleaseNext()
        {
            if (_pending.Count == 0) return false;
            _pending.Dequeue().SetResult();
            return true;
        }
    }

    /// <summary>Reads give <paramref name="data"/>, at most <paramref name="most"/> bytes each; writes are kept.</summary>
    private sealed class SteppedStream(Steps steps, byte[]? data = null, int most = int.MaxValue) : DuplexStream
    {
        private int _at;
        public readonly MemoryStream Written = new();

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await steps.Step().ConfigureAwait(false);
            int n = Math.Min(Math.Min(buffer.Length, most), (data?.Length ?? 0) - _at);
            data.AsSpan(_at, n).CopyTo(buffer.Span);
            _at += n;
            return n;
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await steps.Step().ConfigureAwait(false);
            Written.Write(buffer.Span);
        }

        public override async Task FlushAsync(CancellationToken cancellationToken) => await steps.Step().ConfigureAwait(false);
    }

    /// <summary>Lends <paramref name="segments"/> one per call, each call a stepped operation.</summary>
    private sealed class SteppedLender(Steps steps, byte[][] segments) : SequentialReadStream, ISegmentReader
    {
        private int _next;
        public override int Read(Span<byte> buffer) => throw new InvalidOperationException("read by segments");
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
        public async ValueTask<ReadOnlyMemory<byte>> ReadSegmentAsync(CancellationToken cancellationToken)
        {
            await steps.Step().ConfigureAwait(false);
            return _next < segments.Length ? segments[_next++] : ReadOnlyMemory<byte>.Empty;
        }
    }

    /// <summary>
    /// Runs the path once per operation, that one left pending; the posts of all runs. The path's own awaits say
    /// ConfigureAwait(false): only the code under test may post.
    /// </summary>
    private static int EveryFirstSuspension(Func<Steps, Task> start)
    {
        int posts = 0;
        var before = SynchronizationContext.Current;
        try
        {
            for (int pendAt = 0; ; pendAt++)
            {
                Assert.True(pendAt < 200, "the path did not end in 200 operations");
                var steps = new Steps(pendAt);
                var context = new CountingContext();
                SynchronizationContext.SetSynchronizationContext(context);
                var finished = start(steps);
                SynchronizationContext.SetSynchronizationContext(null);
                while (!finished.IsCompleted && steps.ReleaseNext()) { }
                Assert.True(finished.IsCompleted, $"operation {pendAt}: the path waits on something other than its streams");
                Assert.True(finished.IsCompletedSuccessfully, $"operation {pendAt}: {finished.Exception?.InnerException?.Message}");
                posts += context.Posts;
                if (!steps.Pended) return posts;
            }
        }
        finally
        {
            SynchronizationContext.SetSynchronizationContext(before);
        }
    }

    private static readonly byte[] Data = RandomNumberGenerator.GetBytes(5000);

    [Fact]
    public void TheTeeNeverResumesOnTheCallersContext()
    {
        Assert.Equal(0, EveryFirstSuspension(async steps =>
        {
            var first = new SteppedStream(steps);
            var second = new SteppedStream(steps);
            var tee = new TeeWriteStream(first, second);
            await tee.WriteAsync(Data).ConfigureAwait(false);
            await tee.FlushAsync().ConfigureAwait(false);
            Assert.Equal(Data, second.Written.ToArray());
        }));
    }

    [Fact]
    public void TheReadDigestNeverResumesOnTheCallersContext()
    {
        Assert.Equal(0, EveryFirstSuspension(async steps =>
        {
            using var digest = new DigestReadStream(new SteppedStream(steps, Data, most: 2000), DigestAlgorithm.Sha256);
            Assert.InRange(await digest.ReadAsync(new byte[100]).ConfigureAwait(false), 1, 100);
            await digest.DrainAsync(default).ConfigureAwait(false);
            Assert.Equal(Data.Length, digest.BytesRead);
        }));
        Assert.Equal(0, EveryFirstSuspension(async steps =>
        {
            using var digest = new DigestReadStream(new SteppedStream(steps, Data, most: 2000), DigestAlgorithm.Sha256);
            while (!(await digest.ReadSegmentAsync(default).ConfigureAwait(false)).IsEmpty) { }
            Assert.Equal(Data.Length, digest.BytesRead);
        }));
        Assert.Equal(0, EveryFirstSuspension(async steps =>
        {
            using var digest = new DigestReadStream(new SteppedLender(steps, [Data[..10], Data[10..]]), DigestAlgorithm.Sha256);
            while (!(await digest.ReadSegmentAsync(default).ConfigureAwait(false)).IsEmpty) { }
            Assert.Equal(Data.Length, digest.BytesRead);
        }));
    }

    [Fact]
    public void AChildSenderNeverResumesOnTheCallersContext()
    {
        // Every frame is published before the sender starts: its ring waits complete at once, only its link's writes wait.
        var data = RandomNumberGenerator.GetBytes(3 * ProtocolConstants.MaxChunkPayload);
        Assert.Equal(0, EveryFirstSuspension(async steps =>
        {
            using var ring = new RelayRing(16 * RelayRing.SlotSize);
            var cursor = ring.Attach("child");
            var writer = new RingWriterStream(ring, default);
            writer.Write(data);
            await writer.CompleteAsync(data.Length, DigestAlgorithm.Sha256, SHA256.HashData(data), default).ConfigureAwait(false);
            var link = new SteppedStream(steps);
            await new ChildSender(cursor, link).RunAsync(default).ConfigureAwait(false);
            Assert.Equal(4, ring.Published); // 3 Data frames and the End frame
            Assert.Equal(4 * DataFrameHeader.Size + data.Length + DataFrameHeader.EndPayloadSize, link.Written.Length);
        }));
    }

    [Fact]
    public void AFrameReceiverNeverResumesOnTheCallersContext()
    {
        var wire = WireFrames.Concat(WireFrames.Stream(Data, 1000));
        Assert.Equal(0, EveryFirstSuspension(async steps =>
        {
            using var ring = new RelayRing(16 * RelayRing.SlotSize);
            var end = await new FrameReceiver(new SteppedStream(steps, wire, most: 1500), ring).RunAsync(default).ConfigureAwait(false);
            Assert.Equal(Data.Length, end.PayloadLength);
        }));
    }
}
