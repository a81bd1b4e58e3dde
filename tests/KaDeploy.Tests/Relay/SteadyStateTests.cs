using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Relay;

/// <summary>Issue 10: the relay path lends slots instead of copying, and allocates nothing per frame.</summary>
public class SteadyStateTests
{
    private const int Chunk = ProtocolConstants.MaxChunkPayload;

    [Fact]
    public async Task ALentSegmentKeepsItsSlotUntilTheNextRead()
    {
        using var ring = new RelayRing(4 * RelayRing.SlotSize);
        var reader = new RingReaderStream(ring.Attach("sink"));
        var writer = new RingWriterStream(ring, default);
        var data = RandomNumberGenerator.GetBytes(6 * Chunk);
        writer.Write(data.AsSpan(0, 4 * Chunk)); // the ring is full

        var first = await reader.ReadSegmentAsync(default);
        Assert.Equal(data.AsSpan(0, Chunk), first.Span);
        // The lent frame's slot is the one the next frame needs: the producer must wait for it.
        var fifth = writer.WriteAsync(data.AsMemory(4 * Chunk, Chunk)).AsTask();
        Assert.False(fifth.IsCompleted);
        Assert.Equal(data.AsSpan(0, Chunk), first.Span);

        var second = await reader.ReadSegmentAsync(default); // returns the first: the producer goes on
        await fifth.WaitAsync(Eventually.Deadline);
        Assert.Equal(data.AsSpan(Chunk, Chunk), second.Span);

        var rest = new MemoryStream();
        var completing = Task.Run(async () =>
        {
            await writer.WriteAsync(data.AsMemory(5 * Chunk));
            await writer.CompleteAsync(data.Length, DigestAlgorithm.XxHash128, PayloadDigest.Of(DigestAlgorithm.XxHash128, data), default);
        });
        ReadOnlyMemory<byte> s;
        while (!(s = await reader.ReadSegmentAsync(default)).IsEmpty) rest.Write(s.Span);
        await completing.WaitAsync(Eventually.Deadline);
        Assert.Equal(data.AsSpan(2 * Chunk).ToArray(), rest.ToArray());
        Assert.Equal(data.Length, reader.End!.PayloadLength);
    }

    [Fact]
    public void ReceivingAndDeliveringAFrameAllocatesNothing()
    {
        // The same run at two lengths: whatever a run allocates once (ring slots, state machines) cancels out,
        // and what is left is what the frames cost.
        // A per-frame allocation shows in every attempt; something else this thread happened to run (a pool
        // callback of a test beside this one) shows in one: keep the smallest of three.
        long perRun = long.MaxValue;
        for (int attempt = 0; attempt < 3 && perRun >= 512; attempt++)
        {
            long small = AllocatedByRun(frames: 64);
            long large = AllocatedByRun(frames: 64 + 512);
            perRun = Math.Min(perRun, large - small);
        }
        Assert.True(perRun < 512, $"{perRun / 512.0:0.0} bytes allocated per frame (receive, check, publish, lend, digest)");
    }

    // Upstream bytes -> FrameReceiver -> ring -> RingReaderStream -> DigestReadStream (what a node's sink reads),
    // all on this thread: the upstream stream hands the sink every published frame before it serves the next
    // header, so no await ever waits and every await completes synchronously.
    private static long AllocatedByRun(int frames)
    {
        using var ring = new RelayRing(8 * RelayRing.SlotSize);
        var reader = new RingReaderStream(ring.Attach("sink"));
        using var digest = new DigestReadStream(reader, DigestAlgorithm.XxHash128);
        long taken = 0;
        var upstream = new FrameSource(frames, () =>
        {
            for (; taken < ring.Published; taken++)
            {
                var pending = digest.ReadSegmentAsync(default);
                Assert.True(pending.IsCompletedSuccessfully, "the sink had to wait");
            }
        });
        long before = GC.GetAllocatedBytesForCurrentThread();
        var run = new FrameReceiver(upstream, ring).RunAsync(default);
        long after = GC.GetAllocatedBytesForCurrentThread();
        Assert.True(run.IsCompletedSuccessfully, "the receiver had to wait");
        var last = digest.ReadSegmentAsync(default);
        Assert.True(last.IsCompletedSuccessfully && last.Result.IsEmpty); // the End frame
        Assert.Equal((long)frames * Chunk, digest.BytesRead);
        return after - before;
    }

    /// <summary>A parent that sends <c>frames</c> full Data frames and an End frame, calling <c>beforeHeader</c> before each header.</summary>
    private sealed class FrameSource(int frames, Action beforeHeader) : IO.SequentialReadStream
    {
        private readonly byte[] _payload = RandomNumberGenerator.GetBytes(Chunk);
        private readonly byte[] _frame = new byte[DataFrameHeader.Size + Math.Max(Chunk, DataFrameHeader.EndPayloadSize)];
        private int _sent;
        private int _frameLength;
        private int _position;

        public override int Read(Span<byte> buffer)
        {
            if (_position == _frameLength)
            {
                if (_sent > frames) return 0;
                beforeHeader();
                long offset = (long)_sent * Chunk;
                if (_sent < frames)
                {
                    new DataFrameHeader(DataFrameType.Data, Chunk, offset, DataFrameHeader.ComputeChecksum(_payload, offset)).Write(_frame);
                    _payload.CopyTo(_frame, DataFrameHeader.Size);
                    _frameLength = DataFrameHeader.Size + Chunk;
                }
                else
                {
                    var end = _frame.AsSpan(DataFrameHeader.Size, DataFrameHeader.EndPayloadSize);
                    end.Clear();
                    System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(end, offset);
                    System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(end[8..], offset);
                    end[16] = (byte)DigestAlgorithm.XxHash128;
                    new DataFrameHeader(DataFrameType.End, DataFrameHeader.EndPayloadSize, offset, DataFrameHeader.ComputeChecksum(end, offset)).Write(_frame);
                    _frameLength = DataFrameHeader.Size + DataFrameHeader.EndPayloadSize;
                }
                _sent++;
                _position = 0;
            }
            int n = Math.Min(buffer.Length, _frameLength - _position);
            _frame.AsSpan(_position, n).CopyTo(buffer);
            _position += n;
            return n;
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(Read(buffer.Span));
    }
}
