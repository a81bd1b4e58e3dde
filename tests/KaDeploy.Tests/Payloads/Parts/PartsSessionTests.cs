using KaDeploy.Payloads;
using KaDeploy.Payloads.Parts;
using KaDeploy.Protocol;
using KaDeploy.Tests.Session;

namespace KaDeploy.Tests.Payloads.Parts;

/// <summary>A multi-part payload through real loopback sessions: one stream, so arity and compression hold as for any payload.</summary>
public class PartsSessionTests
{
    /// <summary>Reads every part and keeps its header and bytes (each part's digest is checked by the reader).</summary>
    private sealed class PartsCollector : IPayloadSink
    {
        public List<(PartHeader Header, byte[] Bytes)> Parts { get; } = [];
        public string Description => "parts collector";

        public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
        {
            var r = new PartsReader(input);
            while (await r.NextPartAsync(cancellationToken) is { } p)
            {
                var ms = new MemoryStream();
                await p.Content.CopyToAsync(ms, cancellationToken);
                Parts.Add((p.Header, ms.ToArray()));
            }
        }
    }

    [Theory]
    [InlineData(1, WireCompression.None)]
    [InlineData(2, WireCompression.Zstd)]
    public async Task Every_node_of_a_tree_gets_every_part_verified(int arity, WireCompression compression)
    {
        var source = new MultiPartSource(
        [
            new PartSource(PartKind.Manifest, "manifest", new BufferSource("{\"x\":1}"u8.ToArray(), "m")),
            new PartSource(PartKind.Tree, "/", new GeneratedSource(3_000_000, seed: 7, compressible: true)),
            new PartSource(PartKind.Raw, "partition 4", new GeneratedSource(1_500_000, seed: 8)),
        ]);
        var collectors = Enumerable.Range(0, 5).Select(_ => new PartsCollector()).ToArray();
        var (_, results) = await LoopbackSession.RunAsync(source, 5, arity, i => plan =>
        {
            Assert.Equal(PayloadKind.Parts, plan.Kind);
            return collectors[i];
        }, compression);
        Assert.All(results, r => Assert.True(r.Verified, r.Message));
        var root = GeneratedSource.Expected(3_000_000, 7, true);
        var raw = GeneratedSource.Expected(1_500_000, 8, false);
        foreach (var c in collectors)
        {
            Assert.Equal(new[] { "manifest", "/", "partition 4" }, c.Parts.Select(p => p.Header.Name));
            Assert.Equal(root, c.Parts[1].Bytes);
            Assert.Equal(raw, c.Parts[2].Bytes);
        }
    }
}
