using System.Net;
using KaDeploy.Payloads;
using KaDeploy.Payloads.Block;
using KaDeploy.Payloads.Image;
using KaDeploy.Reporting;
using KaDeploy.Session;
using KaDeploy.Tests.Relay;
using KaDeploy.Tests.TestSupport;
using KaDeploy.Transport;

namespace KaDeploy.Tests.Session;

/// <summary>
/// Issue 10 with issue 8: an uncompressed image file is the server's spool (an index, the file read again). An orphan
/// whose parent died mid-stream, at an offset no relay and no ring holds any more, completes from it, verified; if the
/// file changed since it was sent, the orphan fails with that reason instead of getting other bytes.
/// </summary>
public class SourceSpoolSessionTests
{
    // A sink that takes nothing until the test opens its gate, then keeps the whole block map.
    private sealed class GatedSink(Task gate) : IPayloadSink
    {
        public MemoryStream Data { get; } = new();
        public string Description => "memory (gated)";

        public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
        {
            await gate.WaitAsync(cancellationToken);
            await input.CopyToAsync(Data, cancellationToken);
        }
    }

    private static async Task<byte[]> DecodeAsync(byte[] map)
    {
        var reader = new BlockMapReader(new MemoryStream(map));
        var header = await reader.ReadHeaderAsync(default);
        var image = new byte[header.TotalLength];
        while (await reader.ReadNextRunAsync(default) is { } run)
            await reader.ReadRunDataAsync(image.AsMemory((int)run.Offset, run.Length), default);
        return image;
    }

    private sealed record Outcome(SessionReport Report, ClientResult?[] Results, GatedSink[] Sinks, string Log);

    // Chain n0 -> n1 -> n2, no retention on the relays, a server ring of 256 KiB. n1's sink takes nothing: its ring
    // fills, then n0's. Once n0 is more than the server's ring ahead of n1, n0 dies: n1 (and n2 behind it) can only
    // resume from the server's spool. `beforeResume` runs once the server has read its whole source.
    private static async Task<Outcome> RunAsync(string image, Action beforeResume, bool keyed = false)
    {
        using var key = keyed ? KaDeploy.Security.PresharedKey.Generate() : null;
        var net = new MemoryTransport { WindowBytes = 128 * 1024 };
        var log = new LockedStringWriter();
        var syncLog = TextWriter.Synchronized(log);
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var addresses = Enumerable.Range(0, 3).Select(i => IPAddress.Parse($"127.0.9.{i + 40}")).ToArray();
        var kill = addresses.Select(_ => CancellationTokenSource.CreateLinkedTokenSource(timeout.Token)).ToArray();
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var sinks = Enumerable.Range(0, 3).Select(i => new GatedSink(i == 1 ? gate.Task : Task.CompletedTask)).ToArray();
        await using var server = new DeployServer(new ServerOptions
        {
            Source = ImageSource.Open(image, new ImageSourceOptions { Raw = true }), Clients = 3, Arity = 1, BufferBytes = 256 << 10,
            Bind = IPAddress.Loopback, ControlPort = 0, Discovery = false, Session = "srcspool", Log = syncLog,
            Transport = net, FailureTimeout = TimeSpan.FromSeconds(3), SlowNodeAfter = TimeSpan.Zero, Key = key,
        });
        var run = server.RunAsync(timeout.Token);
        var clients = Enumerable.Range(0, 3).Select(i => new DeployClient(new ClientOptions
        {
            Server = $"127.0.0.1:{server.ControlPort}", Session = "srcspool", Bind = addresses[i], BufferBytes = 1L << 20,
            RetainBytes = 0, SinkFactory = _ => sinks[i], Log = syncLog, NodeName = $"n{i}", Transport = net,
            FailureTimeout = TimeSpan.FromSeconds(3), Key = key,
        }).RunAsync(kill[i].Token)).ToArray();

        long Seen(int i) => server.Nodes.FirstOrDefault(n => n.Report.Name == $"n{i}")?.VerifiedOffset ?? 0;
        // A keyed ring's slots also hold each frame opened: it holds about half as much of the stream (the server's too).
        long ahead = keyed ? 300L << 10 : 512L << 10;
        await Eventually.HoldsAsync(() => Seen(1) > 0 && Seen(0) > Seen(1) + ahead, "n0 more than the server's ring ahead of the stalled n1");
        kill[0].Cancel();
        foreach (var l in net.Links)
            if (l.Opener.Address.Equals(addresses[0]) || l.Acceptor.Address.Equals(addresses[0])) l.Reset();
        await Eventually.HoldsAsync(() => log.ToString().Contains("source done"), "the server to read its whole source");
        beforeResume();
        gate.SetResult();
        var report = await run;
        return new Outcome(report, await ClientResults.CollectAsync(clients), sinks, log.ToString());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)] // sealed frames: the spool seals them again, and they must open at the orphan as the first ones did
    public async Task AnOrphanWhoseParentDiedCompletesFromTheServersSourceSpool(bool keyed)
    {
        using var dir = new TempDirectory("kad-srcspool-session");
        string image = SourceSpoolTests.MakeSparseImage(dir, 11);
        var o = await RunAsync(image, () => { }, keyed);

        Assert.Contains("spool: re-read from " + image, o.Log);
        Assert.Contains("from the spool", o.Log);
        var file = File.ReadAllBytes(image);
        foreach (int i in new[] { 1, 2 })
        {
            Assert.True(o.Results[i]?.Verified, $"n{i}: {o.Results[i]?.Message}\n{o.Log}");
            var copy = await DecodeAsync(o.Sinks[i].Data.ToArray());
            Assert.True(file.AsSpan().SequenceEqual(copy), $"n{i}: copy differs");
        }
        var n1 = o.Report.Nodes.Single(n => n.Name == "n1");
        Assert.Equal(0, n1.Repairs.Single().NewParentId);
        Assert.Equal(["n0"], o.Report.Failed.Select(f => f.Name));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AnOrphanFailsWithTheReasonWhenTheFileChangedSinceItWasSent(bool keyed)
    {
        using var dir = new TempDirectory("kad-srcspool-session");
        string image = SourceSpoolTests.MakeSparseImage(dir, 12);
        byte[] original = File.ReadAllBytes(image);
        // The last data of the image, far past what n1 and n2 hold, changes once the server has sent it.
        var o = await RunAsync(image, () =>
        {
            using var f = File.OpenHandle(image, FileMode.Open, FileAccess.ReadWrite);
            long at = RandomAccess.GetLength(f) - 100;
            var b = new byte[1];
            RandomAccess.Read(f, b, at);
            b[0] ^= 1;
            RandomAccess.Write(f, b, at);
        }, keyed);

        Assert.False(o.Report.Success);
        Assert.False(o.Results[1]?.Verified ?? false, $"n1 verified a copy of a changed file\n{o.Log}");
        Assert.False(o.Report.Nodes.Single(n => n.Name == "n1").Verified);
        // n2, behind n1, re-attaches to the server once n1 is failed. It fails too, or, when its offset is still in the
        // server's ring (a race: how far n1 forwarded before the refusal), finishes from the frames first sent: then its
        // copy is of the file as it was sent, never of the changed file.
        if (o.Results[2]?.Verified == true)
        {
            byte[] copy = await DecodeAsync(o.Sinks[2].Data.ToArray());
            Assert.True(original.AsSpan().SequenceEqual(copy), $"n2 verified a copy that is not the file as sent\n{o.Log}");
        }
        var n1 = o.Report.Nodes.Single(n => n.Name == "n1");
        Assert.Contains("the source changed since it was sent", n1.Message);
        Assert.Contains(image, n1.Message);
    }
}
