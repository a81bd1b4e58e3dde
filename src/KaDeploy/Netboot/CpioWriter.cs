using System.Globalization;
using System.Text;

namespace KaDeploy.Netboot;

/// <summary>
/// Writes the "newc" cpio format the kernel unpacks as an initramfs (Documentation/driver-api/early-userspace/buffer-format.rst):
/// per entry a 110-byte ASCII header ("070701" and 13 eight-digit hex fields), the name with its NUL, padding to 4,
/// the data, padding to 4; the archive ends with the entry "TRAILER!!!". Everything is owned by root.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
public sealed class CpioWriter
{
    private const uint TypeDirectory = 0x4000, TypeRegular = 0x8000, TypeSymlink = 0xA000, TypeCharDevice = 0x2000;
    private readonly Stream _out;
    private uint _inode = 1;
    private long _position;

    /// <summary>Writes to <paramref name="output"/> (not disposed here).</summary>
    public CpioWriter(Stream output) => _out = output ?? throw new ArgumentNullException(nameof(output));

    /// <summary>Adds a directory.</summary>
    public void AddDirectory(string name, uint permissions = 0x1ED /* 0755 */) => Entry(name, TypeDirectory | permissions, 2, 0, 0, ReadOnlySpan<byte>.Empty);

    /// <summary>Adds a regular file with the given content.</summary>
    public void AddFile(string name, ReadOnlySpan<byte> content, uint permissions) => Entry(name, TypeRegular | permissions, 1, 0, 0, content);

    /// <summary>Adds a symbolic link.</summary>
    public void AddSymlink(string name, string target) => Entry(name, TypeSymlink | 0x1FF, 1, 0, 0, Encoding.UTF8.GetBytes(target));

    /// <summary>Adds a character device node (the kernel needs /dev/console before /init can mount devtmpfs).</summary>
    public void AddCharDevice(string name, uint major, uint minor, uint permissions = 0x180 /* 0600 */) =>
        Entry(name, TypeCharDevice | permissions, 1, major, minor, ReadOnlySpan<byte>.Empty);

    /// <summary>
    /// Adds a directory tree under <paramref name="prefix"/> ("" for the archive root): directories, regular files
    /// (permission bits kept) and symlinks, in sorted order so the same tree gives the same archive.
    /// </summary>
    public void AddTree(string root, string prefix = "")
    {
        foreach (var entry in new DirectoryInfo(root).EnumerateFileSystemInfos().OrderBy(e => e.Name, StringComparer.Ordinal))
        {
            string name = prefix.Length == 0 ? entry.Name : prefix + "/" + entry.Name;
            uint perm = (uint)File.GetUnixFileMode(entry.FullName) & 0xFFF;
            if (entry.LinkTarget is { } target) AddSymlink(name, target);
            else if (entry is DirectoryInfo) { AddDirectory(name, perm); AddTree(entry.FullName, name); }
            else AddFile(name, File.ReadAllBytes(entry.FullName), perm);
        }
    }

    /// <summary>Writes the trailer; the archive is complete after this.</summary>
    public void Finish()
    {
        Entry("TRAILER!!!", 0, 1, 0, 0, ReadOnlySpan<byte>.Empty, inode: 0);
        _out.Flush();
    }

    private void Entry(string name, uint mode, uint links, uint rdevMajor, uint rdevMinor, ReadOnlySpan<byte> data, uint? inode = null)
    {
        byte[] nameBytes = Encoding.UTF8.GetBytes(name);
        var header = new StringBuilder("070701", 110);
        foreach (uint field in new[] { inode ?? _inode++, mode, 0u, 0u, links, 0u, (uint)data.Length, 0u, 0u, rdevMajor, rdevMinor, (uint)nameBytes.Length + 1, 0u })
            header.Append(field.ToString("X8", CultureInfo.InvariantCulture));
        Write(Encoding.ASCII.GetBytes(header.ToString()));
        Write(nameBytes);
        Write([0]);
        Pad();
        Write(data);
        Pad();
    }

    private void Write(ReadOnlySpan<byte> bytes)
    {
        _out.Write(bytes);
        _position += bytes.Length;
    }

    private void Pad()
    {
        int pad = (int)((4 - (_position & 3)) & 3);
        if (pad > 0) Write(new byte[pad]);
    }
}
