using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Session;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Session;

/// <summary>
/// The frames digest end to end, on real clients over loopback: a node verifies its copy only when the frames its sink
/// took are the sequence the End frame names, even when every frame passed its own check; and a real server and
/// clients on the defaults use it and verify.
/// </summary>
public class FramesDigestSessionTests
{
    private static readonly byte[] Payload = RandomNumberGenerator.GetBytes(300_000);

    private static DeployClient Client(ScriptedServer server, string name, MemorySink sink) => new(new ClientOptions
    {
        Server = $"127.0.0.1:{server.ControlPort}", Session = "test", Bind = LoopbackSession.NextAddress(), NodeName = name,
        BufferBytes = 1 << 20, SinkFactory = _ => sink, ConnectTimeout = TimeSpan.FromSeconds(30), LinkTimeout = TimeSpan.FromSeconds(30),
        FailureTimeout = TimeSpan.FromSeconds(30), // the scripted server sends no heartbeats; nothing here waits for a new parent
    });

    public static TheoryData<string> Ends => new() { "right", "another frame's check", "a frame short", "no frames digest" };

    [Theory]
    [MemberData(nameof(Ends))]
    public async Task ANodeVerifiesOnlyTheServersSequenceOfFrames(string end)
    {
        var frames = WireFrames.Stream(Payload, 65536);
        var data = frames.Take(frames.Count - 1).ToList();
        byte[] digest = end switch
        {
            "right" => WireFrames.FramesDigest(data),
            "another frame's check" => WireFrames.FramesDigest(data.Select((f, i) => i == 2 ? Rechecked(f) : f)),
            "a frame short" => WireFrames.FramesDigest(data.Take(data.Count - 1)),
            _ => SHA256.HashData(Payload), // a content digest where the plan named frames
        };
        var algorithm = end == "no frames digest" ? DigestAlgorithm.Sha256 : DigestAlgorithm.Frames;
        data.Add(WireFrames.End(Payload.Length, Payload.Length, digest, algorithm: algorithm));

        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await using var server = new ScriptedServer { Digest = DigestAlgorithm.Frames };
        var sink = new MemorySink();
        var run = Client(server, "a", sink).RunAsync(cts.Token);
        var a = (await server.RegisterAsync(1, cts.Token)).Single();
        await a.Channel.SendAsync(server.PlanFor(a.Id, 0, null), cts.Token);
        var (_, link) = await server.AcceptDataLinkAsync(cts.Token);
        await ScriptedServer.LinkedAsync(a, cts.Token);
        await ScriptedServer.SendAndCloseAsync(link, WireFrames.Concat(data), cts.Token);

        var done = await ScriptedServer.DoneAsync(a, cts.Token);
        Assert.NotNull(done);
        var result = await run;
        if (end == "right")
        {
            Assert.True(done.Verified, done.Message);
            Assert.True(result.Verified, result.Message);
            Assert.Equal(Payload, sink.Data.ToArray());
            return;
        }
        Assert.False(done.Verified, $"a node took {end} as verified");
        Assert.False(result.Verified);
        Assert.Contains(end == "no frames digest" ? "carries a sha256 digest, the plan named frames" : "frames mismatch", done.Message);
    }

    // The same frame with another (true-looking) check: what the End frame names is not what was sent.
    private static byte[] Rechecked(byte[] frame)
    {
        var copy = (byte[])frame.Clone();
        copy[20] ^= 0x5a;
        return copy;
    }

    [Fact]
    public async Task ARealSessionOnTheDefaultsUsesTheFramesDigestAndEveryNodeVerifies()
    {
        var source = new GeneratedSource(700_000, seed: 7);
        Assert.Equal(DigestAlgorithm.Frames, new ServerOptions { Source = source }.Digest);
        var (report, results, sinks) = await LoopbackSession.RunAsync(source, clients: 3, arity: 1);
        Assert.Equal("frames", report.DigestAlgorithm);
        Assert.All(results, r => Assert.True(r.Verified, r.Message));
        byte[] expected = GeneratedSource.Expected(700_000, 7, false);
        Assert.All(sinks, s => Assert.Equal(expected, s.Data.ToArray()));
    }
}
