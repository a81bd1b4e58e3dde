using System.Diagnostics;
using System.IO.Pipelines;
using KaDeploy.Payloads;

namespace KaDeploy.Tests.Payloads.Block;

/// <summary>Temporary files, a source-to-sink pipe and small shell helpers shared by the payload tests.</summary>
internal static class PayloadTestKit
{
    /// <summary>Runs <paramref name="source"/> into <paramref name="sink"/> through a bounded in-memory pipe.</summary>
    public static async Task TransferAsync(IPayloadSource source, IPayloadSink sink, CancellationToken cancellationToken)
    {
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 8 << 20, resumeWriterThreshold: 4 << 20));
        Task produce = Task.Run(async () =>
        {
            try
            {
                await source.WriteToAsync(pipe.Writer.AsStream(leaveOpen: true), cancellationToken);
                await pipe.Writer.CompleteAsync();
            }
            catch (Exception e)
            {
                await pipe.Writer.CompleteAsync(e);
                throw;
            }
        }, cancellationToken);
        Task consume = Task.Run(async () =>
        {
            try
            {
                await sink.ConsumeAsync(pipe.Reader.AsStream(leaveOpen: true), cancellationToken);
                await pipe.Reader.CompleteAsync();
            }
            catch (Exception e)
            {
                await pipe.Reader.CompleteAsync(e);
                throw;
            }
        }, cancellationToken);
        await Task.WhenAll(produce, consume);
    }

    /// <summary>Runs a program and returns its stdout; throws when it fails.</summary>
    public static string Run(string program, params string[] args)
    {
        var info = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args) info.ArgumentList.Add(a);
        using Process p = Process.Start(info)!;
        string output = p.StandardOutput.ReadToEnd();
        string error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{program} {string.Join(' ', args)}: {error.Trim()}");
        return output.Trim();
    }

    /// <summary>Bytes the file system has allocated to <paramref name="path"/> (stat's 512-byte blocks).</summary>
    public static long AllocatedBytes(string path) => long.Parse(Run("stat", "-c", "%b", path)) * 512;

    /// <summary>Reads <paramref name="length"/> bytes from the start of a file or device.</summary>
    public static byte[] ReadPrefix(string path, int length)
    {
        byte[] data = new byte[length];
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
        stream.ReadExactly(data);
        return data;
    }

    /// <summary>Random bytes from a fixed seed, so a failure can be reproduced.</summary>
    public static byte[] RandomBytes(int length, int seed)
    {
        byte[] data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    public static CancellationTokenSource SafetyTimeout(int seconds = 60) => new(TimeSpan.FromSeconds(seconds));
}

/// <summary>A directory under the system temp folder, deleted with everything in it.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory()
    {
        Path = Directory.CreateTempSubdirectory("kadeploy-test-").FullName;
    }

    public string Path { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (IOException) { }
    }
}
