using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Security;
using KaDeploy.Tests.Relay;

namespace KaDeploy.Tests.Security;

/// <summary>
/// Issue 9: a sealed ring keeps its wire slots back to back (the plaintext areas lie after them in the same
/// segment), so a keyed node receives and forwards many sealed frames per system call, as a clear one does.
/// However the bytes are cut into reads, children must get the sealed bytes exactly as sent, the sink exactly
/// the plaintext, and a frame whose tag fails anywhere in a batch must stop everything from it on.
/// </summary>
public class SealedBatchedReceiveTests
{
    private static int ChunkOf(StreamCipherKind kind) => ProtocolConstants.MaxChunkPayload - TagOf(kind);
    private static int TagOf(StreamCipherKind kind) => kind != StreamCipherKind.Aes256Gcm ? DataFrameHeader.AegisTagSize : DataFrameHeader.TagSize;
    private static readonly byte[] StreamKey = RandomNumberGenerator.GetBytes(StreamCipher.KeySize);
    private const uint StreamId = 0x0909_0909;

    private static async Task<BatchedReceiveTests.Outcome> ReceiveAsync(StreamCipherKind kind, byte[] wire, Func<int, int, int> cut, int ringSlots = 40)
    {
        using var cipher = new StreamCipher(StreamKey, StreamId, kind);
        using var ring = new RelayRing((long)ringSlots * (RelayRing.SlotSize + RelayRing.PlaintextSize), sealedFrames: true);
        return await BatchedReceiveTests.ReceiveThroughAsync(ring, () => new FrameReceiver(new BatchedReceiveTests.CutStream(wire, cut), ring, 0, cipher));
    }

    private static List<byte[]> Sealed(StreamCipherKind kind, byte[] payload)
    {
        using var cipher = new StreamCipher(StreamKey, StreamId, kind);
        return SealedDataFrameTests.Frames(payload, cipher);
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public async Task ManySealedFramesInOneReadFillTheirSlotsAndArriveIntact(StreamCipherKind kind)
    {
        // 20 full sealed frames (each fills its wire slot exactly), a short one and the End frame: two runs and the carry.
        var payload = RandomNumberGenerator.GetBytes(20 * ChunkOf(kind) + 777);
        var frames = Sealed(kind, payload);
        Assert.All(frames.Take(20), f => Assert.Equal(RelayRing.SlotSize, f.Length));
        var wire = frames.SelectMany(f => f).ToArray();
        BatchedReceiveTests.Intact(await ReceiveAsync(kind, wire, (_, left) => left), frames, payload, "one read");
        BatchedReceiveTests.Intact(await ReceiveAsync(kind, wire, (_, left) => Math.Min(3 * RelayRing.SlotSize + 5, left)), frames, payload, "reads of 3 slots + 5");
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public async Task SealedFramesSplitAroundTheirBoundariesArriveIntact(StreamCipherKind kind)
    {
        var payload = RandomNumberGenerator.GetBytes(3 * ChunkOf(kind) + 100);
        var frames = Sealed(kind, payload);
        var wire = frames.SelectMany(f => f).ToArray();
        var cuts = new SortedSet<int>();
        int end = wire.Length - frames[^1].Length;
        foreach (int boundary in new[] { RelayRing.SlotSize, 2 * RelayRing.SlotSize, 3 * RelayRing.SlotSize, end })
            for (int d = -TagOf(kind) - DataFrameHeader.Size - 1; d <= DataFrameHeader.Size + 1; d++)
                if (boundary + d > 0 && boundary + d < wire.Length) cuts.Add(boundary + d);
        foreach (int at in cuts)
            BatchedReceiveTests.Intact(await ReceiveAsync(kind, wire, (read, left) => read == 0 ? at : left), frames, payload, $"cut at {at}");
    }

    [Theory]
    [InlineData(0, false, StreamCipherKind.Aes256Gcm)]  // the first frame of the read
    [InlineData(5, false, StreamCipherKind.Aes256Gcm)]  // in the middle of a run
    [InlineData(15, true, StreamCipherKind.Aes256Gcm)]  // the last slot of the first run, its tag
    [InlineData(16, false, StreamCipherKind.Aes256Gcm)] // the first slot of the second run
    [InlineData(0, false, StreamCipherKind.Aegis256)]
    [InlineData(5, false, StreamCipherKind.Aegis256)]
    [InlineData(15, true, StreamCipherKind.Aegis256)]
    [InlineData(16, false, StreamCipherKind.Aegis256)]
    public async Task AFlippedByteInTheMiddleOfABatchStopsEverythingFromIt(int bad, bool inTag, StreamCipherKind kind)
    {
        var payload = RandomNumberGenerator.GetBytes(20 * ChunkOf(kind));
        var frames = Sealed(kind, payload);
        frames[bad][inTag ? frames[bad].Length - 3 : DataFrameHeader.Size + 1000] ^= 0x10;
        var wire = frames.SelectMany(f => f).ToArray();
        foreach (Func<int, int, int> cut in new Func<int, int, int>[] { (_, left) => left, (_, left) => Math.Min(3 * RelayRing.SlotSize + 5, left) })
        {
            var o = await ReceiveAsync(kind, wire, cut);
            Assert.Contains("failed authentication", Assert.IsType<ProtocolException>(o.ReceiverError).Message);
            Assert.Equal(bad, o.Published);                                   // the good frames before it, and nothing else
            Assert.Equal(frames.Take(bad).SelectMany(f => f).ToArray(), o.Forwarded);
            Assert.Equal(payload[..(bad * ChunkOf(kind))], o.Written);
            Assert.IsType<KaDeployException>(o.WriteError);                   // the sink learns the upstream failed
        }
    }
}
