using System.Buffers.Binary;
using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Security;

namespace KaDeploy.Tests.Security;

/// <summary>
/// Data frames sealed once at the server (RingWriterStream) and opened on a node (FrameReceiver):
/// every manipulation named in issue 9 is detected before a byte is published, and what a node
/// publishes before the failure is exactly the server's bytes.
/// </summary>
public class SealedDataFrameTests
{
    private static readonly byte[] StreamKey = RandomNumberGenerator.GetBytes(32);
    private const uint StreamId = 0x1234_5678;
    private const int Chunk = DataFrameHeader.MaxSealedChunk;

    private static byte[] Payload(int length, int seed = 1)
    {
        var p = new byte[length];
        new Random(seed).NextBytes(p);
        return p;
    }

    /// <summary>The frames a server sends for <paramref name="payload"/>, each as its exact wire bytes.</summary>
    internal static List<byte[]> Frames(byte[] payload, StreamCipher? cipher)
    {
        using var ring = new RelayRing(64 * RelayRing.SlotSize, sealedFrames: cipher is not null);
        using var cursor = ring.Attach("test");
        var writer = new RingWriterStream(ring, default, cipher);
        writer.Write(payload);
        writer.CompleteAsync(payload.Length, DigestAlgorithm.Sha256, SHA256.HashData(payload), default).GetAwaiter().GetResult();
        var frames = new List<byte[]>();
        while (true)
        {
            var f = cursor.Next(default);
            frames.Add(f.Bytes.ToArray());
            cursor.Advance();
            if (f.Header.Type == DataFrameType.End) return frames;
        }
    }

    /// <summary>Receives <paramref name="wire"/> as a node; returns the plaintext it published and the error, if any.</summary>
    internal static (byte[] Published, Exception? Error, EndOfStream? End) Receive(IEnumerable<byte[]> wire, StreamCipher? cipher)
    {
        using var ring = new RelayRing(64 * RelayRing.SlotSize, sealedFrames: cipher is not null);
        using var cursor = ring.Attach("sink");
        var receiver = new FrameReceiver(new MemoryStream(wire.SelectMany(f => f).ToArray()), ring, 0, cipher);
        Exception? error = null;
        EndOfStream? end = null;
        try { end = receiver.RunAsync(default).GetAwaiter().GetResult(); }
        catch (Exception e) { error = e; }
        var published = new MemoryStream();
        for (long i = 0; i < ring.Published; i++)
        {
            var f = cursor.Next(default);
            if (f.Header.Type == DataFrameType.Data) published.Write(f.Payload.Span);
            cursor.Advance();
        }
        return (published.ToArray(), error, end);
    }

    private static StreamCipher Cipher(byte[]? key = null, uint id = StreamId) => new(key ?? StreamKey, id);

    [Fact]
    public void Sealed_stream_arrives_whole_with_an_authenticated_end()
    {
        var payload = Payload(3 * Chunk + 1000);
        using var c = Cipher();
        var frames = Frames(payload, c);
        Assert.Equal(5, frames.Count);
        Assert.All(frames, f => Assert.True(DataFrameHeader.Read(f).IsSealed));
        using var o = Cipher();
        var (published, error, end) = Receive(frames, o);
        Assert.Null(error);
        Assert.Equal(payload, published);
        Assert.Equal(payload.Length, end!.WireLength);
        Assert.Equal(SHA256.HashData(payload), end.Digest);
    }

    [Fact]
    public void Ciphertext_does_not_contain_the_plaintext()
    {
        var payload = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("KD-MARKER-1234567 ", 10000)));
        using var c = Cipher();
        var wire = Frames(payload, c).SelectMany(f => f).ToArray();
        Assert.True(wire.AsSpan().IndexOf("KD-MARKER-1234567"u8) < 0);
        Assert.True(Frames(payload, null).SelectMany(f => f).ToArray().AsSpan().IndexOf("KD-MARKER-1234567"u8) >= 0);
    }

    [Fact]
    public void Identical_chunks_seal_to_different_ciphertext()
    {
        // The nonce carries the offset: one chunk repeated through the stream never reuses a keystream.
        var chunk = Payload(Chunk);
        using var c = Cipher();
        var f = Frames([.. chunk, .. chunk], c);
        Assert.False(f[0].AsSpan(DataFrameHeader.Size).SequenceEqual(f[1].AsSpan(DataFrameHeader.Size)));
        var xor = new byte[64];
        for (int i = 0; i < xor.Length; i++) xor[i] = (byte)(f[0][DataFrameHeader.Size + i] ^ f[1][DataFrameHeader.Size + i]);
        Assert.Contains(xor, b => b != 0);
    }

    [Fact]
    public void Wrong_key_opens_nothing()
    {
        using var c = Cipher();
        var frames = Frames(Payload(2 * Chunk), c);
        using var wrong = Cipher(RandomNumberGenerator.GetBytes(32));
        var (published, error, _) = Receive(frames, wrong);
        Assert.IsType<ProtocolException>(error);
        Assert.Contains("failed authentication", error!.Message);
        Assert.Empty(published);
    }

    [Fact]
    public void Frames_of_another_session_fail()
    {
        // Same key, another stream id: a session that reused a stream key still cannot feed this one.
        using var c = Cipher(id: StreamId + 1);
        var frames = Frames(Payload(Chunk), c);
        using var o = Cipher();
        var (published, error, _) = Receive(frames, o);
        Assert.IsType<ProtocolException>(error);
        Assert.Empty(published);
    }

    [Fact]
    public void A_frame_replayed_at_another_offset_fails()
    {
        var payload = Payload(3 * Chunk + 10);
        using var c = Cipher();
        var f = Frames(payload, c);
        // Frame 0's sealed chunk, relabelled to stand where frame 1 belongs.
        var replay = f[0].ToArray();
        BinaryPrimitives.WriteInt64LittleEndian(replay.AsSpan(12), Chunk);
        using var o = Cipher();
        var (published, error, _) = Receive([f[0], replay, f[2], f[3], f[4]], o);
        Assert.IsType<ProtocolException>(error);
        Assert.Equal(payload[..Chunk], published);
    }

    [Fact]
    public void Reordered_frames_fail()
    {
        var payload = Payload(3 * Chunk + 10);
        using var c = Cipher();
        var f = Frames(payload, c);
        using var o = Cipher();
        var (published, error, _) = Receive([f[0], f[2], f[1], f[3], f[4]], o);
        Assert.IsType<ProtocolException>(error);
        Assert.Equal(payload[..Chunk], published);
    }

    [Fact]
    public void A_stream_cut_short_never_ends_cleanly()
    {
        var payload = Payload(3 * Chunk + 10);
        using var c = Cipher();
        var f = Frames(payload, c);
        using var o1 = Cipher();
        Assert.IsType<ProtocolException>(Receive([f[0], f[1]], o1).Error);
        // An End frame moved forward to claim the stream stopped early: its offset is authenticated.
        var early = f[4].ToArray();
        BinaryPrimitives.WriteInt64LittleEndian(early.AsSpan(12), 2L * Chunk);
        using var o2 = Cipher();
        var (published, error, end) = Receive([f[0], f[1], early], o2);
        Assert.IsType<ProtocolException>(error);
        Assert.Null(end);
        Assert.Equal(payload[..(2 * Chunk)], published);
    }

    [Fact]
    public void Every_header_byte_is_authenticated()
    {
        var payload = Payload(Chunk + 5);
        using var c = Cipher();
        var f = Frames(payload, c);
        for (int i = 0; i < DataFrameHeader.Size; i++)
        {
            var bad = f[1].ToArray();
            bad[i] ^= 0x01;
            using var o = Cipher();
            var (published, error, _) = Receive([f[0], bad, f[2]], o);
            Assert.True(error is ProtocolException, $"header byte {i} flipped: {error?.GetType().Name ?? "accepted"}");
            Assert.Equal(payload[..Chunk], published);
        }
    }

    [Fact]
    public void A_flipped_bit_anywhere_in_the_sealed_payload_is_detected_and_nothing_of_that_frame_is_published()
    {
        var payload = Payload(2 * Chunk);
        using var c = Cipher();
        var f = Frames(payload, c);
        var rng = new Random(9);
        for (int k = 0; k < 40; k++)
        {
            var bad = f[1].ToArray();
            int pos = k == 0 ? bad.Length - 1 : DataFrameHeader.Size + rng.Next(bad.Length - DataFrameHeader.Size); // k=0: last tag byte
            bad[pos] ^= (byte)(1 << rng.Next(8));
            using var o = Cipher();
            var (published, error, _) = Receive([f[0], bad, f[2]], o);
            Assert.IsType<ProtocolException>(error);
            Assert.Equal(payload[..Chunk], published);
        }
    }

    [Fact]
    public void A_clear_frame_in_a_keyed_session_is_refused()
    {
        var payload = Payload(Chunk);
        var clear = Frames(payload, null);
        using var o = Cipher();
        var (published, error, _) = Receive(clear, o);
        Assert.Contains("clear", error!.Message);
        Assert.Empty(published);
    }

    [Fact]
    public void A_sealed_frame_at_an_unkeyed_node_is_refused()
    {
        using var c = Cipher();
        var (published, error, _) = Receive(Frames(Payload(100), c), null);
        Assert.Contains("no stream key", error!.Message);
        Assert.Empty(published);
    }

    [Fact]
    public async Task Relays_forward_the_sealed_bytes_unchanged()
    {
        var payload = Payload(2 * Chunk + 3);
        using var c = Cipher();
        var frames = Frames(payload, c);
        using var ring = new RelayRing(64 * RelayRing.SlotSize, sealedFrames: true);
        using var child = ring.Attach("child");
        using var o = Cipher();
        await new FrameReceiver(new MemoryStream(frames.SelectMany(f => f).ToArray()), ring, 0, o).RunAsync(default);
        for (int i = 0; i < frames.Count; i++)
        {
            Assert.Equal(frames[i], child.Next(default).Bytes.ToArray());
            child.Advance();
        }
    }
}
