using System.Security.Cryptography;
using KaDeploy.IO;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>Issue 10: a sink takes runs of lent frames (ISegmentRunReader) and gives them back later, in order.</summary>
public class RingRunLendingTests
{
    private const int Chunk = ProtocolConstants.MaxChunkPayload;

    [Fact]
    public async Task ALentRunHoldsEverySlotUntilItIsReturned()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var cursor = ring.Attach("sink");
        using var reader = new RingReaderStream(cursor);
        var writer = new RingWriterStream(ring, default);
        var data = RandomNumberGenerator.GetBytes(7 * Chunk);
        writer.Write(data.AsSpan(0, 4 * Chunk)); // the ring is full

        var run = new ReadOnlyMemory<byte>[RingReaderStream.MaxRunFrames];
        Assert.Equal(4, await reader.LendAsync(run, default));
        Assert.Equal(4, reader.Outstanding);
        for (int i = 0; i < 4; i++) Assert.Equal(data.AsSpan(i * Chunk, Chunk), run[i].Span);

        // Every lent slot is one the producer needs: it waits while they are lent.
        var fifth = writer.WriteAsync(data.AsMemory(4 * Chunk, Chunk)).AsTask();
        Assert.False(fifth.IsCompleted);

        reader.Return(1); // the oldest only: its slot takes the fifth frame, the other three stay as they were
        await fifth.WaitAsync(Eventually.Deadline);
        var sixth = writer.WriteAsync(data.AsMemory(5 * Chunk, Chunk)).AsTask();
        Assert.False(sixth.IsCompleted);
        for (int i = 1; i < 4; i++) Assert.Equal(data.AsSpan(i * Chunk, Chunk), run[i].Span);

        // The next lend starts after what is still lent.
        var more = new ReadOnlyMemory<byte>[RingReaderStream.MaxRunFrames];
        Assert.Equal(1, await reader.LendAsync(more, default));
        Assert.Equal(data.AsSpan(4 * Chunk, Chunk), more[0].Span);
        Assert.Equal(4, reader.Outstanding);

        reader.Return(4);
        await sixth.WaitAsync(Eventually.Deadline);
        var completing = Task.Run(async () =>
        {
            await writer.WriteAsync(data.AsMemory(6 * Chunk));
            await writer.CompleteAsync(data.Length, DigestAlgorithm.XxHash128, PayloadDigest.Of(DigestAlgorithm.XxHash128, data), default);
        });
        var rest = new MemoryStream();
        int n;
        while ((n = await reader.LendAsync(run, default)) > 0)
        {
            for (int i = 0; i < n; i++) rest.Write(run[i].Span);
            reader.Return(n);
        }
        await completing.WaitAsync(Eventually.Deadline);
        Assert.Equal(data.AsSpan(5 * Chunk).ToArray(), rest.ToArray());
        Assert.Equal(data.Length, reader.End!.PayloadLength);
        Assert.Equal(0, reader.Outstanding);
        Assert.Equal(ring.Published, cursor.Position); // every frame, the End included, passed
    }

    [Fact]
    public async Task TheEndIsPassedOnlyAfterTheFramesLentBeforeIt()
    {
        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        var cursor = ring.Attach("sink");
        using var reader = new RingReaderStream(cursor);
        var writer = new RingWriterStream(ring, default);
        var data = RandomNumberGenerator.GetBytes(2 * Chunk + 5);
        await writer.WriteAsync(data);
        await writer.CompleteAsync(data.Length, DigestAlgorithm.XxHash128, PayloadDigest.Of(DigestAlgorithm.XxHash128, data), default);

        var run = new ReadOnlyMemory<byte>[RingReaderStream.MaxRunFrames];
        Assert.Equal(3, await reader.LendAsync(run, default)); // three Data frames; the End frame is taken, not lent
        Assert.NotNull(reader.End);
        Assert.Equal(0, cursor.Position); // nothing passed while the frames are lent
        reader.Return(2);
        Assert.Equal(2, cursor.Position);
        reader.Return(1);
        Assert.Equal(4, cursor.Position); // the last frame and the End frame after it
        Assert.Equal(0, await reader.LendAsync(run, default));
    }

    [Fact]
    public async Task AnotherReadAfterLendingGivesTheRunBackAndGoesOn()
    {
        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        var cursor = ring.Attach("sink");
        using var reader = new RingReaderStream(cursor);
        var writer = new RingWriterStream(ring, default);
        var data = RandomNumberGenerator.GetBytes(3 * Chunk);
        await writer.WriteAsync(data);

        var run = new ReadOnlyMemory<byte>[2];
        Assert.Equal(2, await reader.LendAsync(run, default));
        var buffer = new byte[Chunk];
        Assert.Equal(Chunk, await reader.ReadAsync(buffer));
        Assert.Equal(data.AsSpan(2 * Chunk, Chunk).ToArray(), buffer);
        Assert.Equal(0, reader.Outstanding);
        Assert.Equal(3, cursor.Position);
    }

    [Fact]
    public async Task TheDigestStreamCountsAndDigestsEveryLentRun()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        using var reader = new RingReaderStream(ring.Attach("sink"));
        using var digest = new DigestReadStream(reader, DigestAlgorithm.Sha256);
        Assert.True(digest.LendsRuns);
        var writer = new RingWriterStream(ring, default);
        var data = RandomNumberGenerator.GetBytes(37 * Chunk + 1234);
        var producing = Task.Run(async () =>
        {
            await writer.WriteAsync(data);
            await writer.CompleteAsync(data.Length, DigestAlgorithm.Sha256, PayloadDigest.Of(DigestAlgorithm.Sha256, data), default);
        });
        var got = new MemoryStream();
        var run = new ReadOnlyMemory<byte>[RingReaderStream.MaxRunFrames];
        int n;
        while ((n = await digest.LendAsync(run, default)) > 0)
        {
            Assert.Equal(n, digest.Outstanding);
            for (int i = 0; i < n; i++) got.Write(run[i].Span);
            digest.Return(n);
        }
        await producing.WaitAsync(Eventually.Deadline);
        Assert.Equal(data, got.ToArray());
        Assert.Equal(data.Length, digest.BytesRead);
        Assert.Equal(SHA256.HashData(data), digest.Digest().AsSpan(0, 32).ToArray());
    }

    [Fact]
    public async Task LentRunsFoldEveryFrameIntoTheFramesDigestInOrder()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var frames = new FrameDigest();
        using var reader = new RingReaderStream(ring.Attach("sink")) { Frames = frames };
        var writer = new RingWriterStream(ring, default);
        var data = RandomNumberGenerator.GetBytes(21 * Chunk + 7);
        var producing = Task.Run(async () =>
        {
            await writer.WriteAsync(data);
            return await writer.CompleteAsync(data.Length, DigestAlgorithm.Frames, null, default);
        });
        var got = new MemoryStream();
        var run = new ReadOnlyMemory<byte>[3]; // runs that do not divide the frames evenly
        int n;
        while ((n = await reader.LendAsync(run, default)) > 0)
        {
            for (int i = 0; i < n; i++) got.Write(run[i].Span);
            reader.Return(n);
        }
        byte[] sent = await producing.WaitAsync(Eventually.Deadline);
        Assert.Equal(data, got.ToArray());
        Assert.Equal(22, frames.Frames);
        Assert.Equal(reader.End!.WireLength, frames.NextOffset);
        Assert.Equal(sent, frames.Finish());
    }

    [Fact]
    public void AStreamThatLendsNoRunsSaysSo()
    {
        using var digest = new DigestReadStream(new MemoryStream(new byte[10]));
        Assert.False(digest.LendsRuns);
        Assert.Throws<NotSupportedException>(() => digest.Return(0));
    }
}
