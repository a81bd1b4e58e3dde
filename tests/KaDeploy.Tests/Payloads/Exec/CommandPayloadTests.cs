using KaDeploy.Tests.TestSupport;
using System.Diagnostics;
using System.Text;
using KaDeploy.Payloads;
using KaDeploy.Payloads.Exec;
using KaDeploy.Tests.Payloads.Block;

namespace KaDeploy.Tests.Payloads.Exec;

public class CommandPayloadTests
{
    [Fact]
    public async Task SourceStreamsTheCommandsOutput()
    {
        using var cts = PayloadTestKit.SafetyTimeout(30);
        var source = new CommandSource("seq 1 200000", PayloadKind.Raw);
        var output = new MemoryStream();
        await source.WriteToAsync(output, cts.Token);
        string expected = string.Concat(Enumerable.Range(1, 200000).Select(i => i + "\n"));
        Assert.Equal(expected, Encoding.ASCII.GetString(output.ToArray()));
        Assert.Equal(PayloadKind.Raw, source.Kind);
        Assert.Equal(PayloadKind.Tar, new CommandSource("tar -c .", PayloadKind.Tar).Kind);
    }

    [Fact]
    public async Task SourceReportsAFailingCommand()
    {
        using var cts = PayloadTestKit.SafetyTimeout(30);
        var e = await Assert.ThrowsAsync<KaDeployException>(() =>
            new CommandSource("echo partial; exit 2").WriteToAsync(new MemoryStream(), cts.Token));
        Assert.Equal("command 'echo partial; exit 2' exited with status 2", e.Message);
    }

    [Fact]
    public async Task SourceCommandThatReadsStdinSeesEndOfFile()
    {
        using var cts = PayloadTestKit.SafetyTimeout(30);
        var output = new MemoryStream();
        await new CommandSource("cat; echo done").WriteToAsync(output, cts.Token);
        Assert.Equal("done\n", Encoding.ASCII.GetString(output.ToArray()));
    }

    [Fact]
    public async Task SourceCancellationKillsTheCommand()
    {
        using var safety = PayloadTestKit.SafetyTimeout(30);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(safety.Token);
        using var dir = new TempDirectory();
        string pidFile = dir.File("pid");
        var run = new CommandSource($"echo $$ > {pidFile}.tmp; mv {pidFile}.tmp {pidFile}; exec sleep 60").WriteToAsync(new MemoryStream(), cts.Token);
        await Eventually.HoldsAsync(() => File.Exists(pidFile) || run.IsCompleted, "the command to start");
        int pid = int.Parse(File.ReadAllText(pidFile).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run);
        Assert.False(safety.IsCancellationRequested);
        await Eventually.HoldsAsync(() => !Directory.Exists($"/proc/{pid}"), "the cancelled command to be gone");
    }

    [Fact]
    public async Task SourceKillsTheCommandWhenTheOutputFails()
    {
        using var cts = PayloadTestKit.SafetyTimeout(30);
        using var dir = new TempDirectory();
        string pidFile = dir.File("pid");
        await Assert.ThrowsAsync<IOException>(() =>
            new CommandSource($"echo $$ > {pidFile}; exec yes").WriteToAsync(new FailingStream(), cts.Token));
        int pid = int.Parse(File.ReadAllText(pidFile).Trim());
        Assert.False(Directory.Exists($"/proc/{pid}"), "the command outlived its payload");
    }

    [Fact]
    public async Task SinkFeedsTheCommand()
    {
        using var cts = PayloadTestKit.SafetyTimeout(30);
        using var dir = new TempDirectory();
        byte[] data = PayloadTestKit.RandomBytes(5 * 1024 * 1024 + 17, seed: 31);
        var sink = new CommandSink($"cat > {dir.File("out")}");
        await sink.ConsumeAsync(new MemoryStream(data), cts.Token);
        Assert.Equal(data.Length, sink.BytesWritten);
        Assert.Equal(data, File.ReadAllBytes(dir.File("out")));
    }

    [Fact]
    public async Task SinkReportsAFailingCommand()
    {
        using var cts = PayloadTestKit.SafetyTimeout(30);
        var e = await Assert.ThrowsAsync<KaDeployException>(() =>
            new CommandSink("cat > /dev/null; exit 3").ConsumeAsync(new MemoryStream(new byte[1000]), cts.Token));
        Assert.Equal("command 'cat > /dev/null; exit 3' exited with status 3", e.Message);
    }

    [Fact]
    public async Task SinkCommandThatExitsEarlyIsReportedNotHung()
    {
        using var cts = PayloadTestKit.SafetyTimeout(30);
        var e = await Assert.ThrowsAsync<KaDeployException>(() =>
            new CommandSink("head -c 10 > /dev/null").ConsumeAsync(new EndlessStream(), cts.Token));
        Assert.Contains("command 'head -c 10 > /dev/null' stopped reading its input", e.Message);
        Assert.False(cts.IsCancellationRequested);
    }

    [Fact]
    public async Task SinkCommandThatExitsLeavingAChildOnItsStdinIsReportedNotHung()
    {
        using var cts = PayloadTestKit.SafetyTimeout(30);
        using var dir = new TempDirectory();
        string pidFile = dir.File("pid");
        // The background sleep holds the pipe open without reading (stdin given explicitly: an
        // asynchronous list would get /dev/null): no EPIPE comes while it lives.
        var e = await Assert.ThrowsAsync<KaDeployException>(() =>
            new CommandSink($"exec 3<&0; sleep 120 <&3 3<&- >/dev/null 2>&1 & echo $! > {pidFile}; exit 0").ConsumeAsync(new EndlessStream(), cts.Token));
        Assert.Contains("stopped reading its input", e.Message);
        // Reported while the holder still lives: the sink did not wait for the pipe to close.
        int pid = int.Parse(File.ReadAllText(pidFile).Trim(), System.Globalization.CultureInfo.InvariantCulture);
        try
        {
            Assert.True(Directory.Exists($"/proc/{pid}"), "the sink only reported after the pipe's last holder had gone");
        }
        finally
        {
            try { System.Diagnostics.Process.GetProcessById(pid).Kill(); } catch (ArgumentException) { } catch (InvalidOperationException) { }
        }
    }

    [Fact]
    public async Task SinkCancellationKillsACommandThatDoesNotRead()
    {
        using var safety = PayloadTestKit.SafetyTimeout(30);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(safety.Token);
        cts.CancelAfter(300);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            new CommandSink("sleep 60").ConsumeAsync(new EndlessStream(), cts.Token));
        Assert.False(safety.IsCancellationRequested);
    }

    /// <summary>Zeros forever: a payload no early-exiting command could ever finish.</summary>
    private sealed class EndlessStream : KaDeploy.IO.SequentialReadStream
    {
        public override int Read(byte[] buffer, int offset, int count) { Array.Clear(buffer, offset, count); return count; }
    }

    /// <summary>A destination that breaks on the first write, like a chain whose first node went away.</summary>
    private sealed class FailingStream : KaDeploy.IO.SequentialWriteStream
    {
        public override void Write(byte[] buffer, int offset, int count) => throw new IOException("connection reset");
    }
}
