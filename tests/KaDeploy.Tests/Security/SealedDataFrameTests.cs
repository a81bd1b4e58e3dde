using System.Buffers.Binary;
using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Security;

namespace KaDeploy.Tests.Security;

/// <summary>
/// Data frames sealed once at the server (RingWriterStream) and opened on a node (FrameReceiver):
/// every manipulation named in issue 9 is detected before a byte is published, and what a node
/// publishes before the failure is exactly the server's bytes. Every test runs with each stream cipher
/// (AES-256-GCM and AEGIS-256): the second is held to the same bar as the first.
/// </summary>
public class SealedDataFrameTests
{
    private static readonly byte[] StreamKey = RandomNumberGenerator.GetBytes(32);
    private const uint StreamId = 0x1234_5678;
    private static int ChunkOf(StreamCipherKind kind) => ProtocolConstants.MaxChunkPayload - (kind != StreamCipherKind.Aes256Gcm ? DataFrameHeader.AegisTagSize : DataFrameHeader.TagSize);

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

    private static StreamCipher Cipher(StreamCipherKind kind, byte[]? key = null, uint id = StreamId) => new(key ?? StreamKey, id, kind);

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public void Sealed_stream_arrives_whole_with_an_authenticated_end(StreamCipherKind kind)
    {
        int chunk = ChunkOf(kind);
        var payload = Payload(3 * chunk + 1000);
        using var c = Cipher(kind);
        var frames = Frames(payload, c);
        Assert.Equal(5, frames.Count);
        Assert.All(frames, f => Assert.True(DataFrameHeader.Read(f).IsSealed));
        using var o = Cipher(kind);
        var (published, error, end) = Receive(frames, o);
        Assert.Null(error);
        Assert.Equal(payload, published);
        Assert.Equal(payload.Length, end!.WireLength);
        Assert.Equal(SHA256.HashData(payload), end.Digest);
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public void Ciphertext_does_not_contain_the_plaintext(StreamCipherKind kind)
    {
        var payload = System.Text.Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("KD-MARKER-1234567 ", 10000)));
        using var c = Cipher(kind);
        var wire = Frames(payload, c).SelectMany(f => f).ToArray();
        Assert.True(wire.AsSpan().IndexOf("KD-MARKER-1234567"u8) < 0);
        Assert.True(Frames(payload, null).SelectMany(f => f).ToArray().AsSpan().IndexOf("KD-MARKER-1234567"u8) >= 0);
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public void Identical_chunks_seal_to_different_ciphertext(StreamCipherKind kind)
    {
        int chunk = ChunkOf(kind);
        // The nonce carries the offset: one chunk repeated through the stream never reuses a keystream.
        var same = Payload(chunk);
        using var c = Cipher(kind);
        var f = Frames([.. same, .. same], c);
        Assert.False(f[0].AsSpan(DataFrameHeader.Size).SequenceEqual(f[1].AsSpan(DataFrameHeader.Size)));
        var xor = new byte[64];
        for (int i = 0; i < xor.Length; i++) xor[i] = (byte)(f[0][DataFrameHeader.Size + i] ^ f[1][DataFrameHeader.Size + i]);
        Assert.Contains(xor, b => b != 0);
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public void Wrong_key_opens_nothing(StreamCipherKind kind)
    {
        int chunk = ChunkOf(kind);
        using var c = Cipher(kind);
        var frames = Frames(Payload(2 * chunk), c);
        using var wrong = Cipher(kind, RandomNumberGenerator.GetBytes(32));
        var (published, error, _) = Receive(frames, wrong);
        Assert.IsType<ProtocolException>(error);
        Assert.Contains("failed authentication", error!.Message);
        Assert.Empty(published);
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public void Frames_of_another_session_fail(StreamCipherKind kind)
    {
        int chunk = ChunkOf(kind);
        // Same key, another stream id: a session that reused a stream key still cannot feed this one.
        using var c = Cipher(kind, id: StreamId + 1);
        var frames = Frames(Payload(chunk), c);
        using var o = Cipher(kind);
        var (published, error, _) = Receive(frames, o);
        Assert.IsType<ProtocolException>(error);
        Assert.Empty(published);
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public void A_frame_replayed_at_another_offset_fails(StreamCipherKind kind)
    {
        int chunk = ChunkOf(kind);
        var payload = Payload(3 * chunk + 10);
        using var c = Cipher(kind);
        var f = Frames(payload, c);
        // Frame 0's sealed chunk, relabelled to stand where frame 1 belongs.
        var replay = f[0].ToArray();
        BinaryPrimitives.WriteInt64LittleEndian(replay.AsSpan(12), chunk);
        using var o = Cipher(kind);
        var (published, error, _) = Receive([f[0], replay, f[2], f[3], f[4]], o);
        Assert.IsType<ProtocolException>(error);
        Assert.Equal(payload[..chunk], published);
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public void Reordered_frames_fail(StreamCipherKind kind)
    {
        int chunk = ChunkOf(kind);
        var payload = Payload(3 * chunk + 10);
        using var c = Cipher(kind);
        var f = Frames(payload, c);
        using var o = Cipher(kind);
        var (published, error, _) = Receive([f[0], f[2], f[1], f[3], f[4]], o);
        Assert.IsType<ProtocolException>(error);
        Assert.Equal(payload[..chunk], published);
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public void A_stream_cut_short_never_ends_cleanly(StreamCipherKind kind)
    {
        int chunk = ChunkOf(kind);
        var payload = Payload(3 * chunk + 10);
        using var c = Cipher(kind);
        var f = Frames(payload, c);
        using var o1 = Cipher(kind);
        Assert.IsType<ProtocolException>(Receive([f[0], f[1]], o1).Error);
        // An End frame moved forward to claim the stream stopped early: its offset is authenticated.
        var early = f[4].ToArray();
        BinaryPrimitives.WriteInt64LittleEndian(early.AsSpan(12), 2L * chunk);
        using var o2 = Cipher(kind);
        var (published, error, end) = Receive([f[0], f[1], early], o2);
        Assert.IsType<ProtocolException>(error);
        Assert.Null(end);
        Assert.Equal(payload[..(2 * chunk)], published);
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public void Every_header_byte_is_authenticated(StreamCipherKind kind)
    {
        int chunk = ChunkOf(kind);
        var payload = Payload(chunk + 5);
        using var c = Cipher(kind);
        var f = Frames(payload, c);
        for (int i = 0; i < DataFrameHeader.Size; i++)
        {
            var bad = f[1].ToArray();
            bad[i] ^= 0x01;
            using var o = Cipher(kind);
            var (published, error, _) = Receive([f[0], bad, f[2]], o);
            Assert.True(error is ProtocolException, $"header byte {i} flipped: {error?.GetType().Name ?? "accepted"}");
            Assert.Equal(payload[..chunk], published);
        }
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public void A_flipped_bit_anywhere_in_the_sealed_payload_is_detected_and_nothing_of_that_frame_is_published(StreamCipherKind kind)
    {
        int chunk = ChunkOf(kind);
        var payload = Payload(2 * chunk);
        using var c = Cipher(kind);
        var f = Frames(payload, c);
        var rng = new Random(9);
        for (int k = 0; k < 40; k++)
        {
            var bad = f[1].ToArray();
            int pos = k == 0 ? bad.Length - 1 : DataFrameHeader.Size + rng.Next(bad.Length - DataFrameHeader.Size); // k=0: last tag byte
            bad[pos] ^= (byte)(1 << rng.Next(8));
            using var o = Cipher(kind);
            var (published, error, _) = Receive([f[0], bad, f[2]], o);
            Assert.IsType<ProtocolException>(error);
            Assert.Equal(payload[..chunk], published);
        }
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public void A_clear_frame_in_a_keyed_session_is_refused(StreamCipherKind kind)
    {
        int chunk = ChunkOf(kind);
        var payload = Payload(chunk);
        var clear = Frames(payload, null);
        using var o = Cipher(kind);
        var (published, error, _) = Receive(clear, o);
        Assert.Contains("clear", error!.Message);
        Assert.Empty(published);
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public void A_sealed_frame_at_an_unkeyed_node_is_refused(StreamCipherKind kind)
    {
        using var c = Cipher(kind);
        var (published, error, _) = Receive(Frames(Payload(100), c), null);
        Assert.Contains("no stream key", error!.Message);
        Assert.Empty(published);
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public async Task Relays_forward_the_sealed_bytes_unchanged(StreamCipherKind kind)
    {
        int chunk = ChunkOf(kind);
        var payload = Payload(2 * chunk + 3);
        using var c = Cipher(kind);
        var frames = Frames(payload, c);
        using var ring = new RelayRing(64 * RelayRing.SlotSize, sealedFrames: true);
        using var child = ring.Attach("child");
        using var o = Cipher(kind);
        await new FrameReceiver(new MemoryStream(frames.SelectMany(f => f).ToArray()), ring, 0, o).RunAsync(default);
        for (int i = 0; i < frames.Count; i++)
        {
            Assert.Equal(frames[i], child.Next(default).Bytes.ToArray());
            child.Advance();
        }
    }

    [Fact]
    public void A_frame_sealed_with_the_other_cipher_is_refused_even_under_the_same_key()
    {
        // The cipher is in the flags, the flags are in the associated data, and a node opens only its Plan's cipher:
        // no one can make a node accept frames of a cipher the server did not choose.
        var payload = Payload(1000);
        using var gcm = Cipher(StreamCipherKind.Aes256Gcm);
        using var aegis = Cipher(StreamCipherKind.Aegis256);
        var (published, error, _) = Receive(Frames(payload, gcm), aegis);
        Assert.Contains("sealed with AES-256-GCM, this session uses AEGIS-256", Assert.IsType<ProtocolException>(error).Message);
        Assert.Empty(published);
        using var aegis2 = Cipher(StreamCipherKind.Aegis256);
        using var gcm2 = Cipher(StreamCipherKind.Aes256Gcm);
        (published, error, _) = Receive(Frames(payload, aegis2), gcm2);
        Assert.Contains("sealed with AEGIS-256, this session uses AES-256-GCM", Assert.IsType<ProtocolException>(error).Message);
        Assert.Empty(published);
        using var aegis3 = Cipher(StreamCipherKind.Aegis256);
        using var l128 = Cipher(StreamCipherKind.Aegis128L);
        (published, error, _) = Receive(Frames(payload, aegis3), l128);
        Assert.Contains("sealed with AEGIS-256, this session uses AEGIS-128L", Assert.IsType<ProtocolException>(error).Message);
        Assert.Empty(published);
    }

    [Fact]
    public void Aegis_frames_carry_a_32_byte_tag_and_fill_their_slot()
    {
        using var c = Cipher(StreamCipherKind.Aegis256);
        Assert.Equal(32, c.TagSize);
        var frames = Frames(Payload(2 * c.MaxChunk + 1), c);
        var h = DataFrameHeader.Read(frames[0]);
        Assert.Equal(DataFrameFlags.Sealed | DataFrameFlags.Aegis256, h.Flags);
        Assert.Equal(RelayRing.SlotSize, frames[0].Length);
        Assert.Equal(c.MaxChunk, h.PlaintextLength);
        Assert.Equal(1 + 32, DataFrameHeader.Read(frames[2]).PayloadLength);
    }

    [Theory]
    [InlineData(DataFrameType.Data, 0L, "A476059D548D3F1433AF55E412727E0F21252AA24CA6421DC458572F01C0772FAC3E473332138F872389C486F3B85757")]
    [InlineData(DataFrameType.Data, 0x12345678L, "C1427DDFA23FEB79F3836CBE3D6ACB8117474BF15A1135BF442299F301655F312D14D8D28DA0371D44AC2B78F2F64BDF")]
    [InlineData(DataFrameType.End, 0x12345678L, "CB966E892E1F1958B00A065855A485E20C82FC4F25C55B25F0F6C71D86F27A0D80BB2DEDD730ECF57E0718F0725CD8D2")]
    public void Aegis_seals_as_libsodium_does(DataFrameType type, long offset, string expected)
    {
        // Known answers computed independently (tests/kat/aegis_kat.py: Python ctypes on libsodium 1.0.22's crypto_aead_aegis256_encrypt_detached;
        // key 0..31, nonce = u32 stream id 7 || u64 offset with bit 63 set for End || 20 zero bytes, ad = the frame
        // header, protocol version 3): a wrapper that swaps arguments, or a nonce that leaves out the offset or the frame type, agrees
        // with itself but not with these.
        var key = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        using var c = new StreamCipher(key, 7, StreamCipherKind.Aegis256);
        var frame = new byte[DataFrameHeader.Size + 16 + 32];
        c.Seal(type, offset, "ka-deploy aegis!"u8, frame);
        Assert.Equal(expected, Convert.ToHexString(frame.AsSpan(DataFrameHeader.Size)));
    }
    [Fact]
    public void Aegis128L_seals_as_libsodium_does()
    {
        // As above with crypto_aead_aegis128l_encrypt_detached: key = the stream key's first 16 bytes (0..15), nonce =
        // u32 stream id 7 || u64 offset || 4 zero bytes.
        var key = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        using var c = new StreamCipher(key, 7, StreamCipherKind.Aegis128L);
        var frame = new byte[DataFrameHeader.Size + 16 + 32];
        c.Seal(DataFrameType.Data, 0x12345678, "ka-deploy aegis!"u8, frame);
        Assert.Equal("A9150F7AB948D8044BD03172695861E76FF0FD0237A4EE06DA81705F8DCBFEB01DDC1054F296429C82CFC6363ADC364D",
            Convert.ToHexString(frame.AsSpan(DataFrameHeader.Size)));
    }
}
