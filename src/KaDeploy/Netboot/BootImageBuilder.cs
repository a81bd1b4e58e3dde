using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;

namespace KaDeploy.Netboot;

/// <summary>What goes into a network-boot image and where it is cached.</summary>
public sealed class BootImageOptions
{
    /// <summary>Debian kernel package (a metapackage such as linux-image-amd64 is followed to the real one), or a .deb file.</summary>
    public string KernelPackage { get; init; } = "linux-image-amd64";

    /// <summary>Where downloaded packages, unpacked kernels and built images are kept, keyed by their inputs.</summary>
    public string CacheDirectory { get; init; } = "/var/cache/ka-deploy/netboot";

    /// <summary>The NativeAOT ka-deploy binary to put in the image (runs without a .NET runtime).</summary>
    public required string ClientBinary { get; init; }

    /// <summary>Statically linked busybox (Debian's busybox-static installs /bin/busybox).</summary>
    public string Busybox { get; init; } = "/bin/busybox";

    /// <summary>Build again even when an image with the same inputs is cached.</summary>
    public bool Rebuild { get; init; }

    /// <summary>How many images the cache keeps (the most recently used; each is about 25 MB): every new client
    /// build or kernel makes a new one, and a cache that is never pruned grows by that much each time.</summary>
    public int KeepImages { get; init; } = 4;

    /// <summary>Where the build says what it does.</summary>
    public TextWriter Log { get; init; } = TextWriter.Null;
}

/// <summary>A built image: kernel and initramfs, with what went in.</summary>
public sealed record BootImage(string Directory, string KernelVersion, string Key, long KernelBytes, long InitrdBytes, bool FromCache, TimeSpan BuildTime)
{
    /// <summary>The kernel file (<c>vmlinuz</c>).</summary>
    public string Kernel => Path.Combine(Directory, "vmlinuz");

    /// <summary>The initramfs (<c>initrd.img</c>, gzip-compressed newc cpio).</summary>
    public string Initrd => Path.Combine(Directory, "initrd.img");

    /// <summary>The list of what went in (<c>manifest.txt</c>).</summary>
    public string Manifest => Path.Combine(Directory, "manifest.txt");
}

/// <summary>
/// Builds the network-boot image: a Debian kernel (downloaded with apt-get, unpacked with dpkg-deb, never installed)
/// and an initramfs holding busybox, the ka-deploy client, the disk tools a whole-node install runs (with their
/// shared libraries, found with ldd), the kernel modules for common network and disk hardware (with modules.dep made
/// by depmod for this image) and the /init that brings up the network and runs the client.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public static class BootImageBuilder
{
    /// <summary>Driver modules loaded at boot: virtual and common server NICs and disk controllers (a driver without its
    /// device loads and does nothing), ext4 and FAT (Debian mounts FAT with iocharset=ascii: nls_ascii), and crc32c, which ext4 asks the crypto API for at mount time (not in modules.dep).</summary>
    public static readonly IReadOnlyList<string> BootModules =
    [
        "virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "e1000", "e1000e", "igb", "ixgbe", "i40e", "mlx5_core",
        "ahci", "nvme", "sd_mod", "sr_mod", "af_packet", "crc32c_generic", "crc32c_intel", "ext4", "vfat", "nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8",
    ];

    /// <summary>File-system modules in the image, loaded by the kernel when a mount needs them (btrfs and xfs take
    /// a minute to initialise under emulation: only nodes that use them pay for it).</summary>
    public static readonly IReadOnlyList<string> OnDemandModules =
        ["xfs", "btrfs", "efivarfs"];

    /// <summary>Every module that goes into the image.</summary>
    public static IEnumerable<string> Modules => BootModules.Concat(OnDemandModules);

    /// <summary>Tools for partitioning, file systems and boot loaders: (name, Debian package, required).</summary>
    public static readonly IReadOnlyList<(string Name, string Package, bool Required)> Tools =
    [
        ("sfdisk", "fdisk", true), ("blkid", "util-linux", true), ("wipefs", "util-linux", true), ("mkswap", "util-linux", true),
        ("partx", "util-linux", false), ("blockdev", "util-linux", false), ("sgdisk", "gdisk", false),
        ("mke2fs", "e2fsprogs", true), ("e2fsck", "e2fsprogs", false), ("tune2fs", "e2fsprogs", false), ("resize2fs", "e2fsprogs", false),
        ("mkfs.fat", "dosfstools", true), ("mkfs.xfs", "xfsprogs", false), ("mkfs.btrfs", "btrfs-progs", false),
        ("efibootmgr", "efibootmgr", false),
    ];

    /// <summary>Libraries the NativeAOT client loads with dlopen (System.Security.Cryptography.Native uses OpenSSL).</summary>
    public static readonly IReadOnlyList<string> RuntimeLibraries = ["libssl.so.3", "libcrypto.so.3"];

    private const string Format = "ka-netboot-image-1"; // bump when the layout of the image changes

    /// <summary>
    /// The libsodium shipped with <paramref name="clientBinary"/> (AEGIS-256 data frames): beside it (the launcher's and
    /// the publish output) or in ../lib/ka-deploy/ (the Debian package); null if neither holds one.
    /// </summary>
    public static string? LibsodiumBeside(string clientBinary)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(clientBinary))!;
        return new[] { Path.Combine(dir, "libsodium.so"), Path.GetFullPath(Path.Combine(dir, "../lib/ka-deploy/libsodium.so")) }.FirstOrDefault(File.Exists);
    }

    /// <summary>Builds the image or returns the cached one with the same inputs.</summary>
    /// <exception cref="KaDeployException">A package, tool or input is missing; the message says which and how to get it.</exception>
    public static BootImage Build(BootImageOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var clock = Stopwatch.StartNew();
        var log = options.Log;
        string cache = options.CacheDirectory;
        Directory.CreateDirectory(cache);

        if (!File.Exists(options.ClientBinary)) throw new KaDeployException($"client binary {options.ClientBinary} not found");
        if (IsManaged(options.ClientBinary))
            throw new KaDeployException($"{options.ClientBinary} needs a .NET runtime; the image needs the NativeAOT build (./ka-deploy builds it into .build/bin)");
        if (!File.Exists(options.Busybox)) throw new KaDeployException($"{options.Busybox} not found (apt-get install busybox-static)");
        if (ExternalTool.Run("ldd", [options.Busybox]).Status == 0 && !ExternalTool.Run("ldd", [options.Busybox]).Stdout.Contains("not a dynamic", StringComparison.Ordinal))
            throw new KaDeployException($"{options.Busybox} is dynamically linked; install busybox-static");

        string kernelDeb = ResolveKernelDeb(options.KernelPackage, Path.Combine(cache, "debs"), log);
        var tools = Tools.Select(t => (t.Name, t.Package, t.Required, Path: ExternalTool.Which(t.Name))).ToList();
        var missing = tools.Where(t => t.Required && t.Path is null).ToList();
        if (missing.Count > 0)
            throw new KaDeployException("tools for the install missing on this host: " + string.Join(", ", missing.Select(t => $"{t.Name} (apt-get install {t.Package})")));

        string init = Resource("netboot/init"), dhcpScript = Resource("netboot/udhcpc.script");
        string key = InputKey(kernelDeb, options, tools.Where(t => t.Path is not null).Select(t => t.Path!), init + dhcpScript);
        string dir = Path.Combine(cache, "images", key);
        if (!options.Rebuild && File.Exists(Path.Combine(dir, "initrd.img")) && File.Exists(Path.Combine(dir, "manifest.txt")))
        {
            log.WriteLine($"netboot image: cached ({dir}), same inputs");
            Directory.SetLastWriteTimeUtc(dir, DateTime.UtcNow); // used now: the pruning keeps it
            PruneImages(Path.Combine(cache, "images"), dir, options.KeepImages, log);
            return Describe(dir, key, fromCache: true, clock.Elapsed);
        }

        var manifest = new List<string> { $"image {key} ({Format})" };
        // Unpack the kernel package once per .deb; depmod there gives the full dependency list to pick modules from.
        string unpacked = Path.Combine(cache, "kernels", Path.GetFileNameWithoutExtension(kernelDeb));
        if (!Directory.Exists(unpacked))
        {
            string tmp = unpacked + ".tmp";
            if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
            Directory.CreateDirectory(tmp);
            ExternalTool.Check($"dpkg-deb -x {kernelDeb}", "dpkg-deb", "-x", kernelDeb, tmp);
            Directory.Move(tmp, unpacked);
        }
        string modulesRoot = Path.Combine(unpacked, "lib", "modules");
        if (!Directory.Exists(modulesRoot)) modulesRoot = Path.Combine(unpacked, "usr", "lib", "modules");
        string version = Directory.Exists(modulesRoot) ? Directory.GetDirectories(modulesRoot).Select(Path.GetFileName).OfType<string>().Single() : throw new KaDeployException($"{kernelDeb} holds no kernel modules");
        string vmlinuz = Path.Combine(unpacked, "boot", "vmlinuz-" + version);
        if (!File.Exists(vmlinuz)) throw new KaDeployException($"{kernelDeb} holds no /boot/vmlinuz-{version}");
        string kernelModules = Path.Combine(modulesRoot, version);
        if (!File.Exists(Path.Combine(kernelModules, "modules.dep")))
            ExternalTool.Check("depmod", "depmod", "-b", Path.GetDirectoryName(Path.GetDirectoryName(modulesRoot))!, version);
        manifest.Add($"kernel {Path.GetFileName(kernelDeb)} {version} {new FileInfo(vmlinuz).Length} bytes");

        string tree = Path.Combine(cache, "build-" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
        if (Directory.Exists(tree)) Directory.Delete(tree, true);
        try
        {
            foreach (var d in new[] { "bin", "sbin", "usr/bin", "usr/sbin", "etc/ka-netboot", "lib/x86_64-linux-gnu", "lib64", "proc", "sys", "dev", "run", "tmp", "mnt", "root", "var/run" })
                Directory.CreateDirectory(Path.Combine(tree, d));

            // busybox and its applets: links, except where a full tool is copied in under the same name.
            CopyFile(options.Busybox, Path.Combine(tree, "bin/busybox"));
            var applets = ExternalTool.Check("busybox --list-full", options.Busybox, "--list-full").Split('\n', StringSplitOptions.RemoveEmptyEntries);
            manifest.Add($"busybox {options.Busybox} {new FileInfo(options.Busybox).Length} bytes, {applets.Length} applets");

            var libraries = new SortedSet<string>(StringComparer.Ordinal);
            CopyFile(options.ClientBinary, Path.Combine(tree, "usr/bin/ka-deploy"));
            AddLibraries(options.ClientBinary, libraries);
            // .NET opens OpenSSL at run time (SHA-256, the digests every copy is verified with): ldd cannot see it.
            foreach (var soname in RuntimeLibraries)
            {
                string? lib = new[] { "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64" }.Select(d => Path.Combine(d, soname)).FirstOrDefault(File.Exists)
                    ?? throw new KaDeployException($"{soname} not found; the client needs it (apt-get install libssl3)");
                libraries.Add(lib);
                AddLibraries(lib, libraries);
            }
            manifest.Add($"ka-deploy {options.ClientBinary} {new FileInfo(options.ClientBinary).Length} bytes");
            // AEGIS-256 (the default cipher of a keyed session) needs libsodium >= 1.0.19 beside the binary, where the
            // node's ka-deploy looks for it first (Security/Libsodium.cs); Debian 12's own is 1.0.18, without AEGIS.
            if (LibsodiumBeside(options.ClientBinary) is { } sodium)
            {
                CopyFile(sodium, Path.Combine(tree, "usr/bin/libsodium.so"));
                AddLibraries(sodium, libraries);
                manifest.Add($"libsodium {sodium} {new FileInfo(sodium).Length} bytes (AEGIS-256 for keyed sessions)");
            }
            else
            {
                manifest.Add($"libsodium: none beside {options.ClientBinary}, left out (keyed sessions need ka-deploy server --cipher aes-256-gcm)");
                log.WriteLine($"netboot image: warning: no libsodium.so beside {options.ClientBinary}: nodes booted from this image cannot open AEGIS-256 sessions (use --cipher aes-256-gcm on the server)");
            }
            var toolNames = new HashSet<string>(StringComparer.Ordinal);
            foreach (var t in tools)
            {
                if (t.Path is null) { manifest.Add($"tool {t.Name}: not on this host (apt-get install {t.Package}), left out"); continue; }
                CopyFile(t.Path, Path.Combine(tree, "usr/sbin", t.Name));
                toolNames.Add(t.Name);
                AddLibraries(t.Path, libraries);
                manifest.Add($"tool {t.Name} {t.Path} ({t.Package}) {new FileInfo(t.Path).Length} bytes");
            }
            // The names the install calls the file-system tools by.
            foreach (var (link, target) in new[] { ("mkfs.ext4", "mke2fs"), ("mkfs.ext3", "mke2fs"), ("mkfs.vfat", "mkfs.fat"), ("fsck.ext4", "e2fsck") })
                if (toolNames.Contains(target)) { File.CreateSymbolicLink(Path.Combine(tree, "usr/sbin", link), target); toolNames.Add(link); }
            if (File.Exists("/etc/mke2fs.conf")) CopyFile("/etc/mke2fs.conf", Path.Combine(tree, "etc/mke2fs.conf"));
            foreach (var lib in libraries)
                CopyFile(lib, Path.Combine(tree, lib.TrimStart('/')));
            manifest.Add($"libraries {string.Join(' ', libraries)}");
            foreach (var applet in applets)
            {
                string path = Path.Combine(tree, applet);
                if (toolNames.Contains(Path.GetFileName(applet)) || File.Exists(path) || applet == "bin/busybox") continue;
                Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                File.CreateSymbolicLink(path, "/bin/busybox");
            }

            var loaded = CopyModules(kernelModules, Path.Combine(tree, "lib/modules", version), manifest);
            ExternalTool.Check("depmod for the image", "depmod", "-b", tree, version);
            File.WriteAllText(Path.Combine(tree, "etc/ka-netboot/modules"), string.Join('\n', loaded.Where(BootModules.Contains)) + "\n");

            File.WriteAllText(Path.Combine(tree, "init"), init.Replace("@VERSION@", key, StringComparison.Ordinal));
            File.SetUnixFileMode(Path.Combine(tree, "init"), (UnixFileMode)0x1ED);
            File.WriteAllText(Path.Combine(tree, "etc/ka-netboot/udhcpc.script"), dhcpScript);
            File.SetUnixFileMode(Path.Combine(tree, "etc/ka-netboot/udhcpc.script"), (UnixFileMode)0x1ED);
            File.WriteAllText(Path.Combine(tree, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
            File.WriteAllText(Path.Combine(tree, "etc/group"), "root:x:0:\n");

            string staging = dir + ".tmp";
            if (Directory.Exists(staging)) Directory.Delete(staging, true);
            Directory.CreateDirectory(staging);
            using (var file = File.Create(Path.Combine(staging, "initrd.img")))
            using (var gz = new GZipStream(file, CompressionLevel.SmallestSize))
            using (var buffered = new BufferedStream(gz, 1 << 20))
            {
                var cpio = new CpioWriter(buffered);
                cpio.AddDirectory("dev");
                cpio.AddCharDevice("dev/console", 5, 1);
                cpio.AddCharDevice("dev/null", 1, 3, 0x1B6);
                cpio.AddTree(tree);
                cpio.Finish();
            }
            CopyFile(vmlinuz, Path.Combine(staging, "vmlinuz"));
            manifest.Add($"modules {loaded.Count}: {string.Join(' ', loaded)}");
            File.WriteAllLines(Path.Combine(staging, "manifest.txt"), manifest);
            if (Directory.Exists(dir)) Directory.Delete(dir, true);
            Directory.Move(staging, dir);
        }
        finally
        {
            if (Directory.Exists(tree)) Directory.Delete(tree, true);
        }
        foreach (var line in manifest) log.WriteLine("  " + line);
        PruneImages(Path.Combine(cache, "images"), dir, options.KeepImages, log);
        var image = Describe(dir, key, fromCache: false, clock.Elapsed);
        return image;
    }

    /// <summary>Removes all but the <paramref name="keep"/> most recently used images (directory times: set when an image
    /// is built or found in the cache); <paramref name="current"/> is always kept. A running service is not affected: it
    /// serves copies of its kernel and initramfs from its own TFTP root.</summary>
    internal static void PruneImages(string imagesDirectory, string current, int keep, TextWriter log)
    {
        if (!Directory.Exists(imagesDirectory)) return;
        var old = new DirectoryInfo(imagesDirectory).EnumerateDirectories()
            .Where(d => !string.Equals(d.FullName, Path.GetFullPath(current), StringComparison.Ordinal))
            .OrderByDescending(d => d.LastWriteTimeUtc)
            .Skip(Math.Max(0, keep - 1));
        foreach (var d in old)
        {
            try
            {
                d.Delete(recursive: true);
                log.WriteLine($"netboot image: removed {d.FullName} from the cache (last used {d.LastWriteTimeUtc:yyyy-MM-dd HH:mm}Z; the cache keeps {keep})");
            }
            catch (IOException e) { log.WriteLine($"netboot image: warning: cannot remove {d.FullName}: {e.Message}"); }
            catch (UnauthorizedAccessException e) { log.WriteLine($"netboot image: warning: cannot remove {d.FullName}: {e.Message}"); }
        }
    }

    /// <summary>Reads a built image's directory back.</summary>
    public static BootImage Describe(string dir, string key, bool fromCache, TimeSpan took)
    {
        string version = File.ReadLines(Path.Combine(dir, "manifest.txt")).FirstOrDefault(l => l.StartsWith("kernel ", StringComparison.Ordinal))?.Split(' ')[2] ?? "?";
        return new BootImage(dir, version, key, new FileInfo(Path.Combine(dir, "vmlinuz")).Length, new FileInfo(Path.Combine(dir, "initrd.img")).Length, fromCache, took);
    }

    private static string ResolveKernelDeb(string package, string debs, TextWriter log)
    {
        if (package.EndsWith(".deb", StringComparison.Ordinal))
            return File.Exists(package) ? Path.GetFullPath(package) : throw new KaDeployException($"kernel package file {package} not found");
        Directory.CreateDirectory(debs);
        for (int depth = 0; depth < 3; depth++)
        {
            var (status, show, err) = ExternalTool.Run("apt-cache", ["show", "--no-all-versions", package]);
            string? version = status == 0 ? Field(show, "Version") : null;
            if (version is null)
            {
                string why = err.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? "unknown to apt";
                throw new KaDeployException($"kernel package '{package}' not found ({why}; try apt-get update, or name one from `apt-cache search linux-image`)");
            }
            string file = Path.Combine(debs, $"{package}_{version.Replace(":", "%3a", StringComparison.Ordinal)}_{Field(show, "Architecture") ?? "amd64"}.deb");
            if (!File.Exists(file))
            {
                log.WriteLine($"netboot image: apt-get download {package} ({version})");
                var (st, _, e) = ExternalTool.Run("apt-get", ["download", $"{package}={version}"], debs);
                if (st != 0 || !File.Exists(file))
                    throw new KaDeployException($"apt-get download {package}: {e.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault()?.Trim() ?? "failed"}");
            }
            // Listing a kernel package decompresses all of it (seconds): the answer is kept beside the .deb.
            string marker = file + ".kernel";
            if (!File.Exists(marker))
                File.WriteAllText(marker, ExternalTool.Check($"dpkg-deb -c {file}", "dpkg-deb", "-c", file).Contains("/boot/vmlinuz", StringComparison.Ordinal) ? "yes\n" : "no\n");
            if (File.ReadAllText(marker).StartsWith("yes", StringComparison.Ordinal)) return file;
            // A metapackage (linux-image-amd64): follow its dependency on the versioned kernel package.
            string? next = (Field(show, "Depends") ?? "").Split(',').Select(d => d.Trim().Split(' ')[0]).FirstOrDefault(d => d.StartsWith("linux-image-", StringComparison.Ordinal));
            package = next ?? throw new KaDeployException($"package {package} holds no kernel and depends on none");
        }
        throw new KaDeployException($"kernel package chain too deep at {package}");
    }

    private static string? Field(string control, string name) =>
        control.Split('\n').FirstOrDefault(l => l.StartsWith(name + ": ", StringComparison.Ordinal))?[(name.Length + 2)..].Trim();

    private static List<string> CopyModules(string from, string to, List<string> manifest)
    {
        var paths = new Dictionary<string, (string Path, string[] Deps)>(StringComparer.Ordinal);
        foreach (var line in File.ReadLines(Path.Combine(from, "modules.dep")))
        {
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0) continue;
            string path = line[..colon];
            paths[ModuleName(path)] = (path, line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        }
        var builtin = File.Exists(Path.Combine(from, "modules.builtin"))
            ? File.ReadLines(Path.Combine(from, "modules.builtin")).Select(ModuleName).ToHashSet(StringComparer.Ordinal) : [];
        var present = new List<string>();
        var copied = new HashSet<string>(StringComparer.Ordinal);
        foreach (var m in Modules)
        {
            if (builtin.Contains(m)) { manifest.Add($"module {m}: built into the kernel"); continue; }
            if (!paths.TryGetValue(m, out var entry)) { manifest.Add($"module {m}: not in this kernel"); continue; }
            present.Add(m);
            foreach (var p in entry.Deps.Prepend(entry.Path))
                if (copied.Add(p)) CopyFile(Path.Combine(from, p), Path.Combine(to, p));
        }
        foreach (var f in new[] { "modules.builtin", "modules.builtin.modinfo", "modules.order" })
            if (File.Exists(Path.Combine(from, f))) CopyFile(Path.Combine(from, f), Path.Combine(to, f));
        manifest.Add($"module files {copied.Count}, {copied.Sum(p => new FileInfo(Path.Combine(to, p)).Length)} bytes");
        return present;
    }

    private static string ModuleName(string path)
    {
        string name = Path.GetFileName(path);
        int ko = name.IndexOf(".ko", StringComparison.Ordinal);
        return (ko >= 0 ? name[..ko] : name).Replace('-', '_');
    }

    private static void AddLibraries(string binary, SortedSet<string> into)
    {
        var (status, stdout, _) = ExternalTool.Run("ldd", [binary]);
        if (status != 0) return; // static
        foreach (var raw in stdout.Split('\n'))
        {
            string line = raw.Trim();
            if (line.Contains("not found", StringComparison.Ordinal)) throw new KaDeployException($"{binary}: {line}");
            string? path = line.Contains("=> ", StringComparison.Ordinal) ? line.Split("=> ")[1].Split(' ')[0] : line.StartsWith('/') ? line.Split(' ')[0] : null;
            if (path is { Length: > 0 } && path.StartsWith('/')) into.Add(path);
        }
    }

    private static void CopyFile(string from, string to)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(to)!);
        File.Copy(from, to, overwrite: true); // follows symlinks: the image gets the file itself
    }

    private static bool IsManaged(string binary)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(binary))!;
        return File.Exists(Path.Combine(dir, Path.GetFileNameWithoutExtension(binary) + ".dll")) || Path.GetFileName(binary) == "dotnet";
    }

    private static string InputKey(string kernelDeb, BootImageOptions options, IEnumerable<string> tools, string scripts)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Add(string s) => sha.AppendData(Encoding.UTF8.GetBytes(s + "\n"));
        Add(Format);
        Add(Path.GetFileName(kernelDeb));
        Add(Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(options.ClientBinary))));
        if (LibsodiumBeside(options.ClientBinary) is { } sodium) Add(Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(sodium))));
        Add(Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(options.Busybox))));
        foreach (var t in tools) { var f = new FileInfo(t); Add($"{t} {f.Length} {f.LastWriteTimeUtc.Ticks}"); }
        Add(string.Join(',', Modules));
        Add(scripts);
        return Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant()[..16];
    }

    private static string Resource(string name)
    {
        using var s = Assembly.GetExecutingAssembly().GetManifestResourceStream(name) ?? throw new InvalidOperationException($"resource {name} missing from the build");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }
}
