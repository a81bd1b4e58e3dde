using System.Text.Json;
using System.Text.Json.Serialization;
using KaDeploy.Payloads.Parts;

namespace KaDeploy.Install;

/// <summary>What a partition is for; decides its type code, its file system and what fills it.</summary>
public enum PartitionRole
{
    /// <summary>A Linux file system (ext4, xfs, btrfs) filled from a tree part.</summary>
    Linux,
    /// <summary>Swap space (mkswap).</summary>
    Swap,
    /// <summary>EFI system partition (vfat); the boot loader fills it, and a tree part if the source had it mounted.</summary>
    Esp,
    /// <summary>GPT BIOS boot partition: GRUB i386-pc embeds its core image there; no file system.</summary>
    BiosGrub,
    /// <summary>Copied block by block from the source partition (zero blocks skipped).</summary>
    Raw,
}

/// <summary>One partition of a layout (captured from the source or read from a layout file).</summary>
public sealed class PartitionSpec
{
    /// <summary>Partition number (1-based, the order on the disk).</summary>
    public int Number { get; set; }
    /// <summary>What it is for.</summary>
    public PartitionRole Role { get; set; }
    /// <summary>ext4, xfs, btrfs, vfat, swap, or empty (bios_grub, raw).</summary>
    public string FileSystem { get; set; } = "";
    /// <summary>Fixed size in bytes (0 when <see cref="Percent"/> or <see cref="Fill"/>).</summary>
    public long SizeBytes { get; set; }
    /// <summary>Size as a percentage of the target disk (0 = not a percentage).</summary>
    public double Percent { get; set; }
    /// <summary>Takes what is left of the disk (at most one partition).</summary>
    public bool Fill { get; set; }
    /// <summary>Least size a fill partition may get (what its data needs); a disk that cannot give it is refused.</summary>
    public long MinBytes { get; set; }
    /// <summary>Explicit start in bytes (null: right after the previous partition).</summary>
    public long? StartBytes { get; set; }
    /// <summary>File system label (kept from the source).</summary>
    public string Label { get; set; } = "";
    /// <summary>Mount point in the installed system ("" for none).</summary>
    public string MountPoint { get; set; } = "";
    /// <summary>Mount options (from the source's fstab or the layout file), for the staging mount.</summary>
    public string MountOptions { get; set; } = "";
    /// <summary>GPT partition name.</summary>
    public string Name { get; set; } = "";
    /// <summary>Partition type: a GPT type GUID or an MBR type byte in hex; empty = the role's default.</summary>
    public string TypeCode { get; set; } = "";
    /// <summary>MBR active flag.</summary>
    public bool Bootable { get; set; }
    /// <summary>The source's file system UUID, replaced by the new one in fstab and friends.</summary>
    public string SourceUuid { get; set; } = "";
    /// <summary>The source's partition UUID, replaced by the new one.</summary>
    public string SourcePartUuid { get; set; } = "";
    /// <summary>Where the layout said this (a layout file's line), for error messages.</summary>
    public string Origin { get; set; } = "";

    /// <summary>A short form for plans and errors: "2 /boot ext4 512 MiB".</summary>
    public override string ToString() =>
        $"{Number} {(MountPoint.Length > 0 ? MountPoint : Role.ToString().ToLowerInvariant())} {FileSystem} " +
        (Fill ? "fill" : Percent > 0 ? $"{Percent}%" : $"{SizeBytes >> 20} MiB");
}

/// <summary>A disk's layout: the partition table kind and its partitions, in disk order.</summary>
public sealed class DiskLayout
{
    /// <summary>"gpt" or "dos" (MBR).</summary>
    public string Table { get; set; } = "gpt";
    /// <summary>The partitions, in disk order.</summary>
    public List<PartitionSpec> Partitions { get; set; } = [];
    /// <summary>Size of the source disk, when captured (0 for a layout file).</summary>
    public long SourceDiskBytes { get; set; }
}

/// <summary>One node of the node list (--nodes): its name, how to recognise it, its address, free variables.</summary>
public sealed class NodeEntry
{
    /// <summary>Host name the node gets.</summary>
    public string Name { get; set; } = "";
    /// <summary>1-based position in the node list (KA_NODE_INDEX).</summary>
    public int Index { get; set; }
    /// <summary>MAC address (lower case, colon separated), or empty.</summary>
    public string Mac { get; set; } = "";
    /// <summary>Static address with prefix (198.18.1.5/24), or empty for DHCP.</summary>
    public string Address { get; set; } = "";
    /// <summary>Default gateway for a static address, or empty.</summary>
    public string Gateway { get; set; } = "";
    /// <summary>DNS servers for a static address.</summary>
    public List<string> Dns { get; set; } = [];
    /// <summary>Every key=value of the line (also gateway=, dns=), exported to hooks.</summary>
    public Dictionary<string, string> Vars { get; set; } = [];
    /// <summary>Line of the node list file it was read from (for messages; not sent in the manifest).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int Line { get; set; }
}

/// <summary>One part that follows the manifest, and where it goes.</summary>
public sealed class ManifestPart
{
    /// <summary>Position in the container (the manifest is 0).</summary>
    public int Index { get; set; }
    /// <summary>Tree, block map or raw.</summary>
    public PartKind Kind { get; set; }
    /// <summary>The part's name in the stream.</summary>
    public string Name { get; set; } = "";
    /// <summary>The partition it fills (0 = none: the hooks).</summary>
    public int Partition { get; set; }
    /// <summary>Mount point of a tree part ("" for others).</summary>
    public string MountPoint { get; set; } = "";
}

/// <summary>Part 0 of an install session: everything a node needs before the first file-system byte.</summary>
public sealed class InstallManifest
{
    /// <summary>Format of this manifest; a node refuses one it does not know.</summary>
    public int Version { get; set; } = 1;
    /// <summary>Session name (KA_SESSION).</summary>
    public string Session { get; set; } = "";
    /// <summary>The source's host name (its lines in /etc/hosts are replaced).</summary>
    public string SourceHostname { get; set; } = "";
    /// <summary>The layout to create.</summary>
    public DiskLayout Layout { get; set; } = new();
    /// <summary>The parts after the manifest.</summary>
    public List<ManifestPart> Parts { get; set; } = [];
    /// <summary>The node list; each node finds itself by name or MAC.</summary>
    public List<NodeEntry> Nodes { get; set; } = [];
    /// <summary>Install GRUB for BIOS (i386-pc).</summary>
    public bool BiosBoot { get; set; }
    /// <summary>Install GRUB for UEFI (x86_64-efi), including the removable path.</summary>
    public bool UefiBoot { get; set; }

    /// <summary>Largest manifest a node accepts.</summary>
    public const int MaxBytes = 4 << 20;

    /// <summary>Serialises (source-generated, AOT-safe).</summary>
    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, InstallJsonContext.Default.InstallManifest);

    /// <summary>Parses and checks a manifest received from the stream.</summary>
    public static InstallManifest FromJson(ReadOnlySpan<byte> json)
    {
        InstallManifest? m;
        try
        {
            m = JsonSerializer.Deserialize(json, InstallJsonContext.Default.InstallManifest);
        }
        catch (JsonException e)
        {
            throw new KaDeployException($"install manifest: {e.Message}");
        }
        if (m is null) throw new KaDeployException("install manifest is empty");
        if (m.Version != 1) throw new KaDeployException($"install manifest version {m.Version}, this ka-deploy reads 1");
        LayoutValidator.Validate(m.Layout);
        return m;
    }
}

/// <summary>Source-generated JSON for the manifest (no reflection: NativeAOT).</summary>
[JsonSourceGenerationOptions(UseStringEnumConverter = true, WriteIndented = false)]
[JsonSerializable(typeof(InstallManifest))]
internal sealed partial class InstallJsonContext : JsonSerializerContext;
