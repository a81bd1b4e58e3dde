using System.Buffers.Binary;
using KaDeploy.Payloads.Block;
using KaDeploy.Payloads.Image;
using KaDeploy.Payloads.Tar;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Security;
using KaDeploy.Session;

namespace KaDeploy.Fuzz;

/// <summary>
/// One entry per decoder that reads network or file input. Each takes arbitrary bytes and must
/// either succeed or refuse them with the decoder's documented exception (a one-line
/// <see cref="KaDeployException"/>): any other exception, a hang or a crash is a bug. The same
/// targets run under AFL (fuzz/run) and, with generated inputs and a fixed budget, inside the
/// normal test run (tests/KaDeploy.Tests/Fuzz).
/// </summary>
public static class FuzzTargets
{
    /// <summary>Name → target, as fuzz/run and the tests call them.</summary>
    public static readonly IReadOnlyDictionary<string, Action<byte[]>> All = new Dictionary<string, Action<byte[]>>
    {
        ["dataframe"] = DataFrames,
        ["control"] = ControlFrames,
        ["discovery"] = DiscoveryRequest,
        ["blockmap"] = BlockMap,
        ["tar"] = TarExtract,
        ["image"] = ImageSniff,
        ["handshake"] = HandshakeBoth,
        ["layout"] = Layout,
    };

    // Fixed keys: the fuzzer explores the decoders, not the cipher (it cannot forge a tag).
    private static readonly byte[] StreamKey = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();
    // Lazy: instrumented library code may only run once the fuzzer's shared memory is attached.
    private static PresharedKey Key => s_key ??= PresharedKey.FromBytes(Enumerable.Range(100, 32).Select(i => (byte)i).ToArray());
    private static PresharedKey? s_key;

    /// <summary>Data frames as a node receives them: byte 0 picks clear or keyed, the rest is the link.</summary>
    public static void DataFrames(byte[] input)
    {
        if (input.Length == 0) return;
        using var cipher = (input[0] & 1) != 0 ? new StreamCipher(StreamKey, 7) : null;
        using var ring = new RelayRing(4 * RelayRing.SlotSize, sealedFrames: cipher is not null);
        var receiver = new FrameReceiver(new MemoryStream(input, 1, input.Length - 1, writable: false), ring, 0, cipher);
        try { receiver.RunAsync(CancellationToken.None).GetAwaiter().GetResult(); }
        catch (KaDeployException) { }
        if (input.Length >= 1 + DataFrameHeader.Size)
        {
            try { DataFrameHeader.Read(input.AsSpan(1)); }
            catch (ProtocolException) { }
        }
    }

    /// <summary>Control frames: the codec on the raw bytes, then a channel (byte 0: clear or sealed) reading them as a stream.</summary>
    public static void ControlFrames(byte[] input)
    {
        try { ControlCodec.Decode(input); }
        catch (ProtocolException) { }
        if (input.Length == 0) return;
        ControlCipher? cipher = (input[0] & 1) != 0 ? ControlCipherForTests(opener: false) : null;
        var channel = new ControlChannel(new MemoryStream(input, 1, input.Length - 1, writable: false), cipher);
        try
        {
            for (int i = 0; i < 64; i++)
                if (channel.ReceiveAsync(CancellationToken.None).GetAwaiter().GetResult() is null) break;
        }
        catch (ProtocolException) { }
        finally { channel.DisposeAsync().AsTask().GetAwaiter().GetResult(); }
    }

    /// <summary>A UDP discovery request as the server's responder parses it.</summary>
    public static void DiscoveryRequest(byte[] input) => Discovery.TryParseRequest(input, out _);

    /// <summary>A block map as a node's disk sink reads it, runs and data to the end.</summary>
    public static void BlockMap(byte[] input)
    {
        var reader = new BlockMapReader(new MemoryStream(input, writable: false));
        var buffer = new byte[64 * 1024];
        try
        {
            reader.ReadHeaderAsync(CancellationToken.None).AsTask().GetAwaiter().GetResult();
            while (reader.ReadNextRunAsync(CancellationToken.None).AsTask().GetAwaiter().GetResult() is not null)
                while (reader.RunRemaining > 0)
                    reader.ReadRunDataAsync(buffer.AsMemory(0, Math.Min(buffer.Length, reader.RunRemaining)), CancellationToken.None).AsTask().GetAwaiter().GetResult();
        }
        catch (KaDeployException) { }
    }

    private static long _tarRuns;

    /// <summary>A tar stream through the guard and the extractor into a scratch directory (emptied after each input).</summary>
    public static void TarExtract(byte[] input)
    {
        // One directory per call: the xunit suite runs this target from two test classes at once.
        string target = Path.Combine(ScratchRoot, $"tar-{Environment.ProcessId}-{Interlocked.Increment(ref _tarRuns)}");
        RemoveTree(target);
        Directory.CreateDirectory(target);
        var sink = new TarTreeSink(new TarTreeSinkOptions { Target = target, Force = true, PreserveOwnership = false, Warn = _ => { } });
        try { sink.ConsumeAsync(new MemoryStream(input, writable: false), CancellationToken.None).GetAwaiter().GetResult(); }
        catch (KaDeployException) { }
        finally { RemoveTree(target); }
    }

    // Names are bytes: an extracted name that is not UTF-8 cannot be enumerated back through .NET strings, so
    // a failed managed delete falls back to rm -rf.
    private static void RemoveTree(string path)
    {
        if (!Directory.Exists(path)) return;
        try { Directory.Delete(path, recursive: true); }
        catch (IOException)
        {
            using var rm = System.Diagnostics.Process.Start("rm", ["-rf", "--", path]);
            rm.WaitForExit();
            if (Directory.Exists(path)) throw;
        }
    }

    /// <summary>An image file as the server sniffs it (tar, zstd, gzip, raw disk).</summary>
    public static void ImageSniff(byte[] input)
    {
        string path = Path.Combine(ScratchRoot, "image-" + Environment.ProcessId);
        File.WriteAllBytes(path, input);
        try { ImageSource.Open(path); }
        catch (KaDeployException) { }
        finally { File.Delete(path); }
    }

    /// <summary>The handshake, both roles: byte 0 picks role and key mode, the rest is what the peer sends.</summary>
    public static void HandshakeBoth(byte[] input)
    {
        if (input.Length == 0) return;
        var peer = new ScriptedPeer(input.AsMemory(1));
        var key = (input[0] & 1) != 0 ? Key : null;
        try
        {
            var result = (input[0] & 2) != 0
                ? Handshake.AcceptAsync(peer, key, "s", "fuzz", CancellationToken.None).GetAwaiter().GetResult()
                : Handshake.OpenAsync(peer, HandshakeChannel.Control, "s", key, "fuzz", CancellationToken.None).GetAwaiter().GetResult();
            result.Cipher?.Dispose();
        }
        catch (HandshakeException) { }
    }

    /// <summary>A layout file (install), in both its languages, parsed and validated.</summary>
    public static void Layout(byte[] input)
    {
        string text = System.Text.Encoding.UTF8.GetString(input);
        foreach (bool toml in new[] { false, true })
        {
            try
            {
                var layout = toml ? KaDeploy.Install.LayoutFile.ParseToml(text) : KaDeploy.Install.LayoutFile.Parse(text);
                KaDeploy.Install.LayoutValidator.Validate(layout);
            }
            catch (KaDeployException) { }
        }
    }

    /// <summary>Where file-backed targets write: tmpfs when there is one.</summary>
    public static string ScratchRoot { get; set; } = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();

    private static ControlCipher ControlCipherForTests(bool opener)
    {
        // The fuzzer cannot forge tags; this only exercises the sealed framing's length and tag checks.
        var nonce = new byte[Handshake.NonceSize];
        return ControlCipher.Derive(Key, nonce, nonce, opener);
    }

    /// <summary>A connection whose reads return a script and whose writes go nowhere.</summary>
    private sealed class ScriptedPeer(ReadOnlyMemory<byte> script) : Stream
    {
        private ReadOnlyMemory<byte> _left = script;
        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));
        public override int Read(Span<byte> buffer)
        {
            int n = Math.Min(buffer.Length, _left.Length);
            _left.Span[..n].CopyTo(buffer);
            _left = _left[n..];
            return n;
        }
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => new(Read(buffer.Span));
        public override void Write(byte[] buffer, int offset, int count) { }
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => default;
        public override void Flush() { }
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
