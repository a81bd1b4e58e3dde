using KaDeploy.Payloads;
using KaDeploy.Protocol;
using KaDeploy.Session;
using KaDeploy.Tests.TestSupport;

namespace KaDeploy.Tests.Session;

/// <summary>How a session ends when every node succeeds: nothing in the logs may read as a failure.</summary>
public class SessionEndTests
{
    /// <summary>Reads the whole stream, then waits until <paramref name="release"/> holds before returning (so its node
    /// is still in the session when its child, already finished, closes its control link).</summary>
    private sealed class HeldSink(Func<bool> release) : IPayloadSink
    {
        public MemoryStream Data { get; } = new();
        public string Description => "memory, held at the end";

        public async Task ConsumeAsync(Stream input, CancellationToken cancellationToken)
        {
            await input.CopyToAsync(Data, cancellationToken);
            await Eventually.HoldsAsync(release, "the parent to hear that its finished child left");
        }
    }

    [Fact]
    public async Task AFinishedChildThatLeavesBeforeItsParentIsNotCalledFailed()
    {
        const long length = 3_000_000;
        var log = new LockedStringWriter();
        var shared = log;
        bool Heard() => log.ToString().Contains("dropping child", StringComparison.Ordinal);
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        await using var server = new DeployServer(new ServerOptions
        {
            Source = new GeneratedSource(length), Clients = 2, Arity = 1, BufferBytes = 4 << 20,
            Bind = System.Net.IPAddress.Loopback, ControlPort = 0, Discovery = false, Session = "test", Log = shared,
        });
        var run = server.RunAsync(timeout.Token);
        // Chain server -> node 1 -> node 2: node 1 (the server's child) holds its sink open until it has been told its
        // child left; node 2 finishes and closes its control link first.
        var clients = Enumerable.Range(0, 2).Select(i => new DeployClient(new ClientOptions
        {
            Server = $"127.0.0.1:{server.ControlPort}", Session = "test", Bind = LoopbackSession.NextAddress(), BufferBytes = 4 << 20,
            SinkFactory = plan => plan.ParentId == 0 ? new HeldSink(Heard) : new MemorySink(), NodeName = $"n{i}", Log = shared,
        }).RunAsync(timeout.Token)).ToArray();
        var results = await Task.WhenAll(clients);
        var report = await run;
        Assert.All(results, r => Assert.True(r.Verified, r.Message));
        Assert.True(report.Success);
        string text = log.ToString();
        string dropping = text.Split('\n').Single(l => l.Contains("dropping child", StringComparison.Ordinal));
        Assert.DoesNotContain("failed", dropping);
        Assert.DoesNotContain("declared failed", text);
    }
}
