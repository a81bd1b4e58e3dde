using System.Net;
using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Session;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Session;

/// <summary>
/// "Verified" means the copy equals the source. Real clients are given, by a scripted server on
/// loopback, a stream that is right in every way but one; none of them may call its copy verified,
/// each must say why, and no wrong byte may reach a sink or a child.
/// </summary>
public class IntegrityTests
{
    private static readonly byte[] Payload = RandomNumberGenerator.GetBytes(300_000);

    // Before the first data frame the parent sends its handshake reply (unkeyed: magic 8, version 2, status 1,
    // flags 1, nonce 32) and its DataAccept (a bodiless control frame, 5 bytes).
    private const int AcceptBytes = 44 + 5;

    // The scripted server sends no heartbeats: a client gives it up after its failure timeout (3 s by default). Tests in
    // which a node waits for a new parent rely on that; the others pass a longer one, so that on a loaded machine a
    // verdict that takes more than 3 s to come is still the verdict the test is about, not "server lost".
    private static DeployClient Client(ScriptedServer server, string name, MemorySink sink, TimeSpan? failureTimeout = null) => new(new ClientOptions
    {
        Server = $"127.0.0.1:{server.ControlPort}", Session = "test", Bind = LoopbackSession.NextAddress(), NodeName = name,
        BufferBytes = 1 << 20, SinkFactory = _ => sink, ConnectTimeout = TimeSpan.FromSeconds(30), LinkTimeout = TimeSpan.FromSeconds(30),
        FailureTimeout = failureTimeout ?? TimeSpan.FromSeconds(3),
    });

    /// <summary>A client's verdict, whether it returned one or threw.</summary>
    private static async Task<(bool Verified, string Message)> VerdictAsync(Task<ClientResult> run)
    {
        try
        {
            var r = await run;
            return (r.Verified, r.Message);
        }
        catch (Exception e) when (e is KaDeployException or IOException)
        {
            return (false, e.Message);
        }
    }

    private static void AssertNothingWrongWritten(MemorySink sink, string who) =>
        Assert.True(Payload.AsSpan().StartsWith(sink.Data.ToArray()), $"{who} wrote bytes that are not the source's");

    public static TheoryData<string, string> WrongEnds => new()
    {
        { "sha256", "sha256 mismatch" },
        { "payload length +1", "payload length" },
        { "payload length -1", "payload length" },
        { "wire length", "stream ended at" },
    };

    [Theory]
    [MemberData(nameof(WrongEnds))]
    public async Task ANodeGivenAWrongEndFailsAndSaysSoAndSoDoesItsChild(string what, string expected)
    {
        byte[] sha = SHA256.HashData(Payload);
        if (what == "sha256") sha[^1] ^= 1;
        var frames = WireFrames.Stream(Payload, 65536, sha,
            payloadLength: what.StartsWith("payload length", StringComparison.Ordinal) ? Payload.Length + (what.EndsWith("+1", StringComparison.Ordinal) ? 1 : -1) : null,
            wireLength: what == "wire length" ? Payload.Length + 7 : null);

        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await using var server = new ScriptedServer();
        var sinks = new[] { new MemorySink(), new MemorySink() };
        // Only with a wrong wire length does b lose its parent (a never forwards that End frame) and wait for a new one.
        var patience = what == "wire length" ? (TimeSpan?)null : TimeSpan.FromSeconds(30);
        var runs = new[] { Client(server, "a", sinks[0], patience).RunAsync(cts.Token), Client(server, "b", sinks[1], patience).RunAsync(cts.Token) };
        var nodes = await server.RegisterAsync(2, cts.Token);
        var a = nodes.Single(n => n.Name == "a");
        var b = nodes.Single(n => n.Name == "b");
        await a.Channel.SendAsync(server.PlanFor(a.Id, 0, null, b.Id), cts.Token);
        await b.Channel.SendAsync(server.PlanFor(b.Id, a.Id, a.Data), cts.Token);
        var (_, link) = await server.AcceptDataLinkAsync(cts.Token);
        await ScriptedServer.LinkedAsync(a, cts.Token);
        await ScriptedServer.LinkedAsync(b, cts.Token);
        await ScriptedServer.SendAndCloseAsync(link, WireFrames.Concat(frames), cts.Token);

        foreach (var (node, run, sink) in new[] { (a, runs[0], sinks[0]), (b, runs[1], sinks[1]) })
        {
            // a forwards an End frame that passed its checks (b then finds the same fault); one that did not, it never forwards.
            if (node == b && what == "wire length") expected = "upstream";
            var done = await ScriptedServer.DoneAsync(node, cts.Token);
            Assert.NotNull(done);
            Assert.False(done.Verified, $"node {node.Name} reported a {what} mismatch as verified");
            Assert.True(done.Message.Contains(expected, StringComparison.Ordinal), $"node {node.Name} said: {done.Message}");
            var (verified, message) = await VerdictAsync(run);
            Assert.False(verified);
            Assert.Contains(expected, message);
            AssertNothingWrongWritten(sink, node.Name);
        }
    }

    [Fact]
    public async Task ACorruptedFrameIsNeitherWrittenNorForwardedAndBothNodesFail()
    {
        var frames = WireFrames.Stream(Payload, 65536);
        var good = WireFrames.Concat(frames);
        var bad = frames.Select(f => (byte[])f.Clone()).ToList();
        bad[2][DataFrameHeader.Size + 100] ^= 0x10; // the third frame's payload, checksum left as it was

        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await using var server = new ScriptedServer();
        var sinks = new[] { new MemorySink(), new MemorySink() };
        var runs = new[] { Client(server, "a", sinks[0]).RunAsync(cts.Token), Client(server, "b", sinks[1]).RunAsync(cts.Token) };
        var nodes = await server.RegisterAsync(2, cts.Token);
        var a = nodes.Single(n => n.Name == "a");
        var b = nodes.Single(n => n.Name == "b");
        // b's parent link runs through a recording proxy: what a forwarded is exactly what b was sent.
        await using var tap = new FaultProxy(new IPEndPoint(IPAddress.Loopback, 0), a.Data);
        await a.Channel.SendAsync(server.PlanFor(a.Id, 0, null, b.Id), cts.Token);
        await b.Channel.SendAsync(server.PlanFor(b.Id, a.Id, tap.EndPoint), cts.Token);
        var (_, link) = await server.AcceptDataLinkAsync(cts.Token);
        await ScriptedServer.LinkedAsync(a, cts.Token);
        await ScriptedServer.LinkedAsync(b, cts.Token);
        await ScriptedServer.SendAndCloseAsync(link, WireFrames.Concat(bad), cts.Token);

        var doneA = await ScriptedServer.DoneAsync(a, cts.Token);
        Assert.NotNull(doneA);
        Assert.False(doneA.Verified);
        Assert.Contains("checksum mismatch", doneA.Message);
        var doneB = await ScriptedServer.DoneAsync(b, cts.Token);
        Assert.False(doneB?.Verified ?? false);
        Assert.False((await VerdictAsync(runs[0])).Verified);
        Assert.False((await VerdictAsync(runs[1])).Verified);

        AssertNothingWrongWritten(sinks[0], "a");
        AssertNothingWrongWritten(sinks[1], "b");
        Assert.True(sinks[0].Data.Length <= 2 * 65536, "a wrote past the corrupted frame");
        byte[] forwarded = tap.Delivered;
        Assert.True(forwarded.Length > AcceptBytes, "b got nothing at all: the test proves nothing");
        Assert.True(good.AsSpan().StartsWith(forwarded.AsSpan(AcceptBytes)), "a forwarded bytes that are not the source's frames");
        Assert.True(forwarded.Length - AcceptBytes <= frames[0].Length + frames[1].Length, "a forwarded the corrupted frame");
    }

    [Fact]
    public async Task AStreamCutAtAnyByteLeavesNoNodeVerified()
    {
        // Two small frames and the End frame: every byte of it is a place where the link can break.
        var payload = Payload[..10];
        var wire = WireFrames.Concat(WireFrames.Stream(payload, 5));
        const int batch = 40;
        for (int first = 0; first <= wire.Length; first += batch)
        {
            int[] cuts = [.. Enumerable.Range(first, Math.Min(batch, wire.Length + 1 - first))];
            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            await using var server = new ScriptedServer();
            var sinks = cuts.ToDictionary(c => $"cut{c}", _ => new MemorySink());
            var runs = cuts.ToDictionary(c => $"cut{c}", c => Client(server, $"cut{c}", sinks[$"cut{c}"]).RunAsync(cts.Token));
            var nodes = await server.RegisterAsync(cuts.Length, cts.Token);
            foreach (var n in nodes) await n.Channel.SendAsync(server.PlanFor(n.Id, 0, null), cts.Token);
            var serving = new List<Task>();
            for (int i = 0; i < nodes.Length; i++)
            {
                var (id, link) = await server.AcceptDataLinkAsync(cts.Token);
                int cut = int.Parse(nodes.Single(n => n.Id == id).Name[3..], System.Globalization.CultureInfo.InvariantCulture);
                serving.Add(ScriptedServer.SendAndCloseAsync(link, wire.AsMemory(0, cut), cts.Token));
            }
            await Task.WhenAll(serving);
            foreach (var n in nodes)
            {
                int cut = int.Parse(n.Name[3..], System.Globalization.CultureInfo.InvariantCulture);
                var done = await ScriptedServer.DoneAsync(n, cts.Token);
                var (verified, message) = await VerdictAsync(runs[n.Name]);
                Assert.True(payload.AsSpan().StartsWith(sinks[n.Name].Data.ToArray()), $"cut at {cut}: wrong bytes written");
                if (cut == wire.Length)
                {
                    Assert.True(verified && done is { Verified: true }, $"the whole stream was not verified: {message}");
                    Assert.Equal(payload, sinks[n.Name].Data.ToArray());
                }
                else
                {
                    Assert.False(verified, $"cut at {cut} of {wire.Length}: verified");
                    Assert.False(done?.Verified ?? false, $"cut at {cut} of {wire.Length}: reported verified");
                    Assert.False(string.IsNullOrWhiteSpace(message), $"cut at {cut}: no reason given");
                }
            }
        }
    }
}
