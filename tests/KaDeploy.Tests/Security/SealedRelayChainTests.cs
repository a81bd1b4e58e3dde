using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Security;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Security;

/// <summary>
/// The data path of a keyed session, in memory: the server seals once, each node opens every frame
/// before it publishes it, relays forward the server's ciphertext as it is, and a link that flips
/// one byte of one frame stops the stream at that frame: no node writes or forwards a wrong byte.
/// </summary>
public class SealedRelayChainTests
{
    private sealed record NodeResult(byte[] Written, Exception? Error);

    /// <summary>A read side that flips one byte at stream position <paramref name="at"/> (a fault proxy on the link).</summary>
    private sealed class FlippingReader(Stream inner, long at) : KaDeploy.IO.SequentialReadStream
    {
        private long _position;
        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            int n = await inner.ReadAsync(buffer, cancellationToken);
            if (at >= _position && at < _position + n) buffer.Span[(int)(at - _position)] ^= 0x20;
            _position += n;
            return n;
        }
        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();
    }

    /// <summary>Runs server → node 1 → ... → node N; <paramref name="flipInto"/> = (node, wire position) of a flipped byte.</summary>
    private static async Task<(List<NodeResult> Nodes, List<byte[]> LinkBytes)> RunChain(StreamCipherKind kind, byte[] payload, int nodes, (int Node, long At)? flipInto = null)
    {
        var (key, id) = StreamCipher.NewStream();
        var links = Enumerable.Range(0, nodes).Select(_ => InMemoryConnection.Create()).ToList();
        var tasks = new List<Task>();

        // Server: producer seals, one child sender.
        var serverRing = new RelayRing(16 * RelayRing.SlotSize, sealedFrames: true);
        var serverSender = new ChildSender(serverRing.Attach("node 1"), links[0].A);
        tasks.Add(Task.Run(async () =>
        {
            using var cipher = new StreamCipher(key, id, kind);
            var writer = new RingWriterStream(serverRing, default, cipher);
            await writer.WriteAsync(payload);
            await writer.CompleteAsync(payload.Length, DigestAlgorithm.Sha256, SHA256.HashData(payload), default);
        }));
        tasks.Add(serverSender.RunAsync(default).ContinueWith(_ => links[0].A.Dispose()));

        var results = new NodeResult[nodes];
        for (int n = 0; n < nodes; n++)
        {
            int i = n;
            Stream upstream = links[i].B;
            if (flipInto is { } f && f.Node == i + 1) upstream = new FlippingReader(upstream, f.At);
            tasks.Add(Task.Run(async () =>
            {
                var ring = new RelayRing(16 * RelayRing.SlotSize, sealedFrames: true);
                using var cipher = new StreamCipher(key, id, kind);
                var sink = new RingReaderStream(ring.Attach("disk"));
                Task? forward = null;
                if (i + 1 < nodes)
                {
                    var sender = new ChildSender(ring.Attach($"node {i + 2}"), links[i + 1].A);
                    forward = sender.RunAsync(default).ContinueWith(_ => links[i + 1].A.Dispose());
                }
                var written = new MemoryStream();
                var copy = sink.CopyToAsync(written);
                Exception? error = null;
                try { await new FrameReceiver(upstream, ring, 0, cipher).RunAsync(default); }
                catch (Exception e) { error = e; links[i].B.Dispose(); } // a failed node drops its parent link
                try { await copy; } catch (KaDeployException) { }
                if (forward is not null) await forward;
                results[i] = new NodeResult(written.ToArray(), error);
            }));
        }
        await Task.WhenAll(tasks);
        return ([.. results], links.Select(l => l.A.Sent).ToList());
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public async Task Every_node_gets_the_payload_and_relays_forward_the_servers_ciphertext(StreamCipherKind kind)
    {
        var payload = RandomNumberGenerator.GetBytes(5 * DataFrameHeader.MaxSealedChunk + 777);
        var (nodes, links) = await RunChain(kind, payload, 3);
        Assert.All(nodes, n => { Assert.Null(n.Error); Assert.Equal(payload, n.Written); });
        Assert.Equal(links[0], links[1]); // node 1 forwarded exactly what the server sent
        Assert.Equal(links[0], links[2]);
    }

    [Theory, InlineData(StreamCipherKind.Aes256Gcm), InlineData(StreamCipherKind.Aegis256), InlineData(StreamCipherKind.Aegis128L)]
    public async Task One_flipped_byte_stops_the_stream_at_that_frame_and_no_node_writes_a_wrong_byte(StreamCipherKind kind)
    {
        const int Frame = DataFrameHeader.Size + ProtocolConstants.MaxChunkPayload; // a full sealed frame, whatever the tag
        int chunk = ProtocolConstants.MaxChunkPayload - (kind != StreamCipherKind.Aes256Gcm ? DataFrameHeader.AegisTagSize : DataFrameHeader.TagSize);
        var payload = RandomNumberGenerator.GetBytes(5 * chunk);
        long at = 2L * Frame + 5000; // inside the third frame's ciphertext, on the link into node 2
        var (nodes, links) = await RunChain(kind, payload, 3, (2, at));
        Assert.Null(nodes[0].Error);
        Assert.Equal(payload, nodes[0].Written);
        Assert.Contains("failed authentication", nodes[1].Error!.Message);
        Assert.Equal(payload[..(2 * chunk)], nodes[1].Written); // a true prefix, then nothing
        Assert.NotNull(nodes[2].Error);
        Assert.Equal(payload[..(2 * chunk)], nodes[2].Written);
        Assert.Equal(2 * Frame, links[2].Length); // node 2 never forwarded the altered frame
    }
}
