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
            var img = ImageSource.Open(CheckImageFile(image), new ImageSourceOptions { Raw = raw });
            if (!raw) CheckImageMatchesName(image, img); // --raw: the operator said what it is
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
        {
            TreeSink(target, force, log).EnsureTargetUsable(); // fail now, not after the whole cluster has waited for us
            if (Opt.CheckWritableDirectory(target) is { } why) throw new KaDeployException($"--target {target}: {why}");
        }
        else if (target is not null) CheckTargetFile(target, force);
        if (device is not null && !File.Exists(device)) throw new KaDeployException($"--device {device}: no such device or file");
        if (device is not null && Directory.Exists(device)) throw new KaDeployException($"--device {device} is a directory");

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

    // A file target (an image, a raw stream) is checked before registering: a whole cluster must not wait for a
    // node that will refuse, nor a node silently overwrite a file that holds something.
    private static void CheckTargetFile(string target, bool force)
    {
        if (File.Exists(target))
        {
            var info = new FileInfo(target);
            // A device is the normal target of an image; only a regular file that holds something is protected.
            if (IsRegularFile(target) && info.Length > 0 && !force)
                throw new KaDeployException($"--target {target} exists and is not empty ({info.Length} bytes); give --force to overwrite it");
            try { using var _ = new FileStream(target, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 1); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new KaDeployException($"--target {target}: cannot be written ({e.Message})");
            }
            return;
        }
        if (Opt.CheckWritableFile(target) is { } why) throw new KaDeployException($"--target {target}: {why}");
    }

    private static bool IsRegularFile(string path)
    {
        string real = File.ResolveLinkTarget(path, returnFinalTarget: true)?.FullName ?? Path.GetFullPath(path);
        return KaDeploy.Platform.Posix.TryLStat(real, out var st, out _) && st.Kind == KaDeploy.Platform.FileKind.Regular;
    }

    // Directory, empty and unreadable images are refused here with their reason; the content is judged by ImageSource.
    private static string CheckImageFile(string image)
    {
        if (Directory.Exists(image)) throw new KaDeployException($"--image {image} is a directory; give --source {image} to send a file tree");
        if (!File.Exists(image)) throw new KaDeployException($"--image {image}: no such file");
        try
        {
            using var f = new FileStream(image, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1);
            if (f.Length == 0 && !image.StartsWith("/dev/", StringComparison.Ordinal)) throw new KaDeployException($"--image {image} is empty");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"--image {image} cannot be read: {e.Message}");
        }
        return image;
    }

    // A name that promises an archive must hold one: junk named .tar must not go out as a "raw disk image".
    private static void CheckImageMatchesName(string image, ImageSource img)
    {
        string name = Path.GetFileName(image).ToLowerInvariant();
        string? promised = name.EndsWith(".tar", StringComparison.Ordinal) ? "a tar archive"
            : name.EndsWith(".tar.gz", StringComparison.Ordinal) || name.EndsWith(".tgz", StringComparison.Ordinal) ? "a gzip-compressed tar archive"
            : name.EndsWith(".tar.zst", StringComparison.Ordinal) || name.EndsWith(".tzst", StringComparison.Ordinal) ? "a zstd-compressed tar archive"
            : null;
        if (promised is not null && img.Format == ImageFormat.RawDisk)
            throw new KaDeployException($"--image {image}: named like {promised} but its content is not one");
        // A raw disk image is whole sectors; a few stray bytes (a text file) are not a disk.
        if (img.Format == ImageFormat.RawDisk && img.Length % 512 != 0)
            throw new KaDeployException($"--image {image}: not a tar archive, and its size ({img.Length} bytes) is not a whole number of 512-byte sectors, so not a disk image either");
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
