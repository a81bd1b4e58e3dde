using KaDeploy;
using KaDeploy.Payloads;
using KaDeploy.Payloads.Block;
using KaDeploy.Payloads.Exec;
using KaDeploy.Payloads.Image;
using KaDeploy.Payloads.Tar;
using KaDeploy.Protocol;

namespace KaDeploy.Cli;

/// <summary>Turns the payload options of both sides into a source (server) or a sink factory (client).</summary>
internal static class PayloadSelection
{
    /// <summary>Server side: exactly one of --source, --image, --device, --exec; none means the whole system (/).</summary>
    public static (IPayloadSource Source, bool PreCompressedZstd) ServerSource(
        string? source, string? image, string? device, string? exec, bool oneFileSystem, IReadOnlyList<string> excludes,
        bool defaultExcludes, TextWriter log, bool raw = false)
    {
        int given = new[] { source, image, device, exec }.Count(s => s is not null);
        if (given > 1) throw new KaDeployException("give only one of --source, --image, --device, --exec");
        if (raw && image is null) throw new KaDeployException("--raw applies to --image only");
        if (image is not null)
        {
            var img = ImageSource.Open(image, new ImageSourceOptions { Raw = raw });
            return (img, img.PreCompressedZstd);
        }
        if (device is not null) return (new BlockDeviceSource(device), false);
        if (exec is not null) return (new CommandSource(exec, PayloadKind.Raw), false);
        string root = Path.GetFullPath(source ?? "/");
        if (!Directory.Exists(root)) throw new KaDeployException($"source {root} is not a directory");
        var all = defaultExcludes && root == "/" ? TarTreeSource.DefaultExclusions(root, excludes) : excludes;
        return (new TarTreeSource(new TarTreeSourceOptions
        {
            Root = root, OneFileSystem = oneFileSystem, Excludes = all,
            Warn = w => { lock (log) log.WriteLine("ka-deploy server: warning: " + w); },
        }), false);
    }

    /// <summary>Client side: checks what can be checked before registering, and returns the factory used once the plan is known.</summary>
    public static Func<Plan, IPayloadSink> ClientSinks(string? target, string? device, string? exec, bool force, bool assumeZeroed, TextWriter log)
    {
        int given = new[] { target, device, exec }.Count(s => s is not null);
        if (given == 0) throw new KaDeployException("one of --target, --device or --exec is required");
        if (given > 1) throw new KaDeployException("give only one of --target, --device, --exec");
        if (target is not null && Directory.Exists(target))
            TreeSink(target, force, log).EnsureTargetUsable(); // fail now, not after the whole cluster has waited for us
        if (device is not null && !File.Exists(device)) throw new KaDeployException($"device {device} does not exist");

        return plan =>
        {
            if (exec is not null)
                return plan.Kind == PayloadKind.BlockMap
                    ? throw new KaDeployException("a block-map (disk image) payload needs --device or --target FILE, not --exec")
                    : new CommandSink(exec);
            if (device is not null)
                return plan.Kind switch
                {
                    PayloadKind.BlockMap => new BlockDeviceSink(device, new BlockDeviceSinkOptions { AssumeZeroed = assumeZeroed }),
                    PayloadKind.Raw => new RawStreamSink(device),
                    _ => throw new KaDeployException("a file-tree payload needs --target DIR, not --device"),
                };
            string t = target!;
            return plan.Kind switch
            {
                PayloadKind.Tar => TreeSink(t, force, log).Prepared(),
                // A command's output into a directory is a tar stream, as the original's default pair (tar c | tar x).
                PayloadKind.Raw when Directory.Exists(t) => TreeSink(t, force, log).Prepared(),
                PayloadKind.Raw => new RawStreamSink(t),
                PayloadKind.BlockMap when Directory.Exists(t) => throw new KaDeployException($"a disk image payload cannot go into directory {t}; give --device or a file"),
                _ => new BlockDeviceSink(t, new BlockDeviceSinkOptions { AssumeZeroed = assumeZeroed }),
            };
        };
    }

    private static TarTreeSink TreeSink(string target, bool force, TextWriter log) => new(new TarTreeSinkOptions
    {
        Target = Path.GetFullPath(target), Force = force,
        Warn = w => { lock (log) log.WriteLine("ka-deploy client: warning: " + w); },
    });

    private static TarTreeSink Prepared(this TarTreeSink sink)
    {
        sink.EnsureTargetUsable();
        return sink;
    }

    /// <summary>Parses --compress: none, zstd or zstd:LEVEL.</summary>
    public static (WireCompression Compression, int Level) ParseCompression(string? text)
    {
        if (string.IsNullOrEmpty(text) || text == "none") return (WireCompression.None, 0);
        if (text == "zstd") return (WireCompression.Zstd, 3);
        if (text.StartsWith("zstd:", StringComparison.Ordinal) && int.TryParse(text.AsSpan(5), out int level) && level is >= -7 and <= 22)
            return (WireCompression.Zstd, level);
        throw new KaDeployException($"--compress '{text}': expected none, zstd or zstd:LEVEL (-7..22)");
    }

    /// <summary>Parses sizes like 64MiB, 1G, 512k, 1000000.</summary>
    public static long ParseSize(string text)
    {
        var s = text.Trim();
        int i = 0;
        while (i < s.Length && (char.IsDigit(s[i]) || s[i] == '.')) i++;
        if (i == 0 || !double.TryParse(s.AsSpan(0, i), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v))
            throw new KaDeployException($"bad size '{text}' (examples: 64MiB, 1GiB, 512k)");
        long unit = s[i..].ToLowerInvariant() switch
        {
            "" or "b" => 1,
            "k" or "kb" or "kib" => 1L << 10,
            "m" or "mb" or "mib" => 1L << 20,
            "g" or "gb" or "gib" => 1L << 30,
            "t" or "tb" or "tib" => 1L << 40,
            _ => throw new KaDeployException($"bad size unit in '{text}' (use k, M, G, T, or KiB, MiB, GiB)"),
        };
        return checked((long)(v * unit));
    }
}
