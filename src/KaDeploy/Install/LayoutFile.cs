using System.Globalization;
using Tomlyn;
using Tomlyn.Model;
using Tomlyn.Serialization;

namespace KaDeploy.Install;

/// <summary>
/// Reads a layout file: the original's small language, or TOML (a file ending in .toml).
/// <para>Small language, one partition per line, in disk order ('#' starts a comment):</para>
/// <code>
/// table gpt                       # or dos (MBR); default gpt
/// bios_grub 1                     # sizes: MiB as the original (5000), or 512M, 2G, 10%, fill
/// efi 256 /boot/efi
/// linux 512 /boot label=boot
/// swap 2G
/// linux fill / fs=xfs label=root options=noatime
/// linux 20% /home fs=btrfs start=100G name=home
/// </code>
/// <para>Types: linux (ext4 unless fs=), swap, efi (vfat), bios_grub. Keys: fs, label, options, name, start, type.</para>
/// <para>TOML: <c>table = "gpt"</c> and one <c>[[partition]]</c> table per partition with the same keys
/// (<c>type</c>, <c>size</c>, <c>mount</c>, <c>fs</c>, <c>label</c>, <c>options</c>, <c>name</c>, <c>start</c>, <c>type_code</c>).</para>
/// </summary>
public static class LayoutFile
{
    /// <summary>Reads and validates a layout file; errors are one line with the file and line.</summary>
    public static DiskLayout Load(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"layout {path}: {e.Message}");
        }
        var layout = path.EndsWith(".toml", StringComparison.OrdinalIgnoreCase) ? ParseToml(text, path) : Parse(text, path);
        LayoutValidator.Validate(layout);
        return layout;
    }

    /// <summary>Parses the small language (not yet validated as a whole).</summary>
    public static DiskLayout Parse(string text, string origin = "layout")
    {
        var layout = new DiskLayout();
        int number = 0;
        foreach (var (where, _, t) in ConfigLines.Read(text, origin))
        {
            if (t[0] == "table")
            {
                if (t.Length != 2 || t[1] is not ("gpt" or "dos" or "mbr"))
                    throw new KaDeployException($"{where}: expected 'table gpt' or 'table dos'");
                if (number > 0) throw new KaDeployException($"{where}: 'table' must come before the partitions");
                layout.Table = t[1] == "mbr" ? "dos" : t[1];
                continue;
            }
            if (t[0] == "logical") throw new KaDeployException($"{where}: logical partitions are not supported; use 'table gpt' (any number of partitions)");
            if (t.Length < 2) throw new KaDeployException($"{where}: expected TYPE SIZE [MOUNT] [key=value...]");
            var p = NewPartition(t[0], where);
            p.Number = ++number;
            ParseSize(t[1], p, where);
            int k = 2;
            if (k < t.Length && t[k].StartsWith('/'))
            {
                p.MountPoint = t[k];
                k++;
            }
            for (; k < t.Length; k++)
            {
                int eq = t[k].IndexOf('=');
                if (eq <= 0) throw new KaDeployException($"{where}: '{t[k]}' is neither a mount point (/...) nor key=value");
                SetKey(p, t[k][..eq], t[k][(eq + 1)..], where);
            }
            layout.Partitions.Add(p);
        }
        return layout;
    }

    /// <summary>Parses the TOML form (not yet validated as a whole).</summary>
    public static DiskLayout ParseToml(string text, string origin = "layout.toml")
    {
        TomlTable model;
        try
        {
            model = TomlSerializer.Deserialize<TomlTable>(text, LayoutTomlContext.Default) ?? new TomlTable();
        }
        catch (TomlException e)
        {
            throw new KaDeployException($"{origin}: {e.Message.ReplaceLineEndings(" ")}");
        }
        catch (ArgumentException e) // found by fuzzing: Tomlyn throws this on an escape naming a surrogate code point
        {
            throw new KaDeployException($"{origin}: {e.Message.ReplaceLineEndings(" ")}");
        }
        var layout = new DiskLayout();
        foreach (var (key, value) in model)
        {
            switch (key)
            {
                case "table":
                    layout.Table = (value as string) switch
                    {
                        "gpt" => "gpt",
                        "dos" or "mbr" => "dos",
                        _ => throw new KaDeployException($"{origin}: table must be \"gpt\" or \"dos\""),
                    };
                    break;
                case "partition":
                    if (value is not TomlTableArray parts) throw new KaDeployException($"{origin}: 'partition' must be an array of tables ([[partition]])");
                    int n = 0;
                    foreach (TomlTable t in parts)
                    {
                        string where = $"{origin}: partition {++n}";
                        var p = NewPartition(Text(t, "type", where) ?? throw new KaDeployException($"{where}: 'type' is missing"), where);
                        p.Number = n;
                        object size = t.TryGetValue("size", out var s) ? s : throw new KaDeployException($"{where}: 'size' is missing");
                        ParseSize(size is long l ? l.ToString(CultureInfo.InvariantCulture) : size as string ?? "", p, where);
                        foreach (var (k, v) in t)
                        {
                            if (k is "type" or "size") continue;
                            string sv = v switch
                            {
                                string str => str,
                                long num => num.ToString(CultureInfo.InvariantCulture),
                                _ => throw new KaDeployException($"{where}: '{k}' must be a string or a number"),
                            };
                            if (k == "mount") p.MountPoint = sv;
                            else SetKey(p, k == "type_code" ? "type" : k, sv, where);
                        }
                        layout.Partitions.Add(p);
                    }
                    break;
                default:
                    throw new KaDeployException($"{origin}: unknown key '{key}' (expected table, [[partition]])");
            }
        }
        return layout;
    }

    private static string? Text(TomlTable t, string key, string where) =>
        !t.TryGetValue(key, out var v) ? null : v as string ?? throw new KaDeployException($"{where}: '{key}' must be a string");

    private static PartitionSpec NewPartition(string type, string where) => type switch
    {
        "linux" => new PartitionSpec { Role = PartitionRole.Linux, FileSystem = "ext4", Origin = where },
        "swap" => new PartitionSpec { Role = PartitionRole.Swap, FileSystem = "swap", Origin = where },
        "efi" or "esp" => new PartitionSpec { Role = PartitionRole.Esp, FileSystem = "vfat", Origin = where },
        "bios_grub" or "biosboot" => new PartitionSpec { Role = PartitionRole.BiosGrub, Origin = where },
        _ => throw new KaDeployException($"{where}: unknown partition type '{type}' (expected linux, swap, efi, bios_grub)"),
    };

    private static void SetKey(PartitionSpec p, string key, string value, string where)
    {
        switch (key)
        {
            case "fs":
                if (p.Role != PartitionRole.Linux) throw new KaDeployException($"{where}: fs= applies to linux partitions only");
                if (value is not ("ext4" or "xfs" or "btrfs" or "ext3" or "ext2"))
                    throw new KaDeployException($"{where}: unknown file system '{value}' (expected ext4, xfs, btrfs)");
                p.FileSystem = value;
                break;
            case "label": p.Label = value; break;
            case "options": p.MountOptions = value; break;
            case "name": p.Name = value; break;
            case "type": p.TypeCode = value; break;
            case "start": p.StartBytes = ParseBytes(value, where, mibDefault: true); break;
            default: throw new KaDeployException($"{where}: unknown key '{key}' (expected fs, label, options, name, start, type)");
        }
    }

    private static void ParseSize(string text, PartitionSpec p, string where)
    {
        if (text == "fill")
        {
            p.Fill = true;
            return;
        }
        if (text.EndsWith('%'))
        {
            if (!double.TryParse(text[..^1], NumberStyles.Float, CultureInfo.InvariantCulture, out double pct) || pct <= 0 || pct > 100)
                throw new KaDeployException($"{where}: bad percentage '{text}'");
            p.Percent = pct;
            return;
        }
        p.SizeBytes = ParseBytes(text, where, mibDefault: true);
        if (p.SizeBytes <= 0) throw new KaDeployException($"{where}: size must be positive");
    }

    /// <summary>A plain number is MiB (the original's unit); else a number with k/M/G/T (powers of 1024).</summary>
    internal static long ParseBytes(string text, string where, bool mibDefault)
    {
        int i = 0;
        while (i < text.Length && (char.IsDigit(text[i]) || text[i] == '.')) i++;
        if (i == 0 || !double.TryParse(text.AsSpan(0, i), NumberStyles.Float, CultureInfo.InvariantCulture, out double v))
            throw new KaDeployException($"{where}: bad size '{text}' (examples: 5000 (MiB), 512M, 2G, 10%, fill)");
        long unit = text[i..].ToLowerInvariant() switch
        {
            "" => mibDefault ? 1L << 20 : 1,
            "b" => 1,
            "k" or "kb" or "kib" => 1L << 10,
            "m" or "mb" or "mib" => 1L << 20,
            "g" or "gb" or "gib" => 1L << 30,
            "t" or "tb" or "tib" => 1L << 40,
            _ => throw new KaDeployException($"{where}: bad size unit in '{text}' (use M, G, T)"),
        };
        double bytes = v * unit;
        // 2^62 bytes (4 EiB) is past any disk; beyond it the cast would overflow (found by AFL).
        if (!double.IsFinite(bytes) || bytes < 0 || bytes > (double)(1L << 62))
            throw new KaDeployException($"{where}: size '{text}' is out of range (larger than any disk)");
        return (long)bytes;
    }
}

/// <summary>Checks a layout as a whole, whatever it came from: one-line errors.</summary>
public static class LayoutValidator
{
    /// <summary>Throws <see cref="KaDeployException"/> for a layout no disk could take.</summary>
    public static void Validate(DiskLayout layout)
    {
        ArgumentNullException.ThrowIfNull(layout);
        if (layout.Table is not ("gpt" or "dos")) throw new KaDeployException($"layout: unknown partition table '{layout.Table}'");
        var parts = layout.Partitions;
        if (parts.Count == 0) throw new KaDeployException("layout: no partitions");
        if (layout.Table == "dos" && parts.Count > 4) throw new KaDeployException("layout: more than 4 partitions need 'table gpt'");
        var fills = parts.Where(p => p.Fill).ToList();
        if (fills.Count > 1) throw new KaDeployException($"layout: two fill partitions ({fills[0].Origin} and {fills[1].Origin}); at most one may take the rest of the disk");
        if (!parts.Any(p => p.MountPoint == "/")) throw new KaDeployException("layout: no partition is mounted at /");
        var seen = new Dictionary<string, PartitionSpec>();
        foreach (var p in parts)
        {
            if (p.MountPoint.Length > 0)
            {
                if (!p.MountPoint.StartsWith('/') || p.MountPoint.Contains("/../") || p.MountPoint.EndsWith("/..") || p.MountPoint.Contains('\0'))
                    throw new KaDeployException($"{p.Origin}: bad mount point '{p.MountPoint}'");
                if (p.Role is PartitionRole.Swap or PartitionRole.BiosGrub)
                    throw new KaDeployException($"{p.Origin}: a {p.Role.ToString().ToLowerInvariant()} partition has no mount point");
                if (!seen.TryAdd(p.MountPoint, p))
                    throw new KaDeployException($"{p.Origin}: mount point {p.MountPoint} overlaps {seen[p.MountPoint].Origin}");
            }
            if (p.Role == PartitionRole.BiosGrub && layout.Table == "dos")
                throw new KaDeployException($"{p.Origin}: bios_grub needs 'table gpt' (on MBR, GRUB uses the gap before the first partition)");
            if (p.Label.Length > 0 && p.FileSystem == "vfat" && p.Label.Length > 11)
                throw new KaDeployException($"{p.Origin}: a vfat label has at most 11 characters");
        }
        double pct = parts.Sum(p => p.Percent);
        if (pct > 100) throw new KaDeployException($"layout: percentages add up to {pct}% (more than the disk)");
        // Explicit starts: partitions must not overlap each other (sizes known now: fixed ones only).
        var placed = parts.Where(p => p.StartBytes is not null && p.SizeBytes > 0).OrderBy(p => p.StartBytes).ToList();
        for (int i = 1; i < placed.Count; i++)
        {
            var a = placed[i - 1];
            var b = placed[i];
            if (a.StartBytes!.Value + a.SizeBytes > b.StartBytes!.Value)
                throw new KaDeployException($"{b.Origin}: partition {b.Number} (start {b.StartBytes >> 20} MiB) overlaps partition {a.Number} ({a.StartBytes >> 20}..{(a.StartBytes + a.SizeBytes) >> 20} MiB)");
        }
        long last = -1;
        foreach (var p in parts)
        {
            if (p.StartBytes is { } s)
            {
                if (s < last) throw new KaDeployException($"{p.Origin}: partition {p.Number} starts before the end of the one before it (partitions are in disk order)");
                last = s;
            }
        }
    }
}

/// <summary>Source-generated TOML reading of the untyped model (no reflection: NativeAOT).</summary>
[TomlSerializable(typeof(TomlTable))]
internal sealed partial class LayoutTomlContext : TomlSerializerContext;
