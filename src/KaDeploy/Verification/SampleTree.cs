using System.Text;
using KaDeploy.Platform;

namespace KaDeploy.Verification;

/// <summary>Builds a tree holding every kind of entry the tar payload must carry (tests and `ka-deploy demo`).</summary>
public static class SampleTree
{
    public static bool IsRoot => Environment.IsPrivilegedProcess;

    /// <summary>Long relative path (> 255 bytes, components > 100 bytes).</summary>
    public static readonly string LongPath =
        "long/" + new string('a', 120) + "/" + new string('b', 120) + "/" + new string('c', 150) + ".txt";

    public const string UnicodeName = "ünïcødé-日本語.txt";

    /// <summary>What the builder had to leave out on this machine, for the test's skip message.</summary>
    public sealed record Built(bool UserXattrs, bool Devices, bool Ownership);

    /// <summary>
    /// A tree with regular, empty, multi-MiB and sparse files, hard links, symlinks (relative, absolute, dangling),
    /// FIFO, special mode bits, nanosecond mtimes, long and non-ASCII names, empty dirs; and, when possible,
    /// xattrs (user.*, security.capability, an ACL), device nodes and foreign uid/gid (root only).
    /// </summary>
    public static Built Create(string root, bool withXattrs = true)
    {
        var rng = new Random(42);
        Directory.CreateDirectory(root);
        File.WriteAllText(Path.Combine(root, "file.txt"), "hello world\n");
        File.WriteAllBytes(Path.Combine(root, "empty"), []);
        byte[] big = new byte[5 * 1024 * 1024 + 123];
        rng.NextBytes(big);
        File.WriteAllBytes(Path.Combine(root, "big.bin"), big);

        // Sparse: hole at the start, data, hole in the middle, data, hole at the end.
        using (var fs = new FileStream(Path.Combine(root, "sparse.img"), FileMode.CreateNew))
        {
            byte[] chunk = new byte[64 * 1024];
            rng.NextBytes(chunk);
            fs.Seek(1 << 20, SeekOrigin.Begin);
            fs.Write(chunk);
            fs.Seek(5 << 20, SeekOrigin.Begin);
            fs.Write(chunk);
            fs.SetLength(12 << 20);
        }
        using (var fs = new FileStream(Path.Combine(root, "all-hole.img"), FileMode.CreateNew))
        {
            fs.SetLength(3 << 20);
        }

        Directory.CreateDirectory(Path.Combine(root, "dir/sub"));
        Directory.CreateDirectory(Path.Combine(root, "emptydir"));
        File.WriteAllText(Path.Combine(root, "dir/hl1"), "linked");
        Posix.MakeHardLink(Path.Combine(root, "dir/hl1"), Path.Combine(root, "hl2"));
        Posix.MakeHardLink(Path.Combine(root, "dir/hl1"), Path.Combine(root, "dir/sub/hl3"));
        File.CreateSymbolicLink(Path.Combine(root, "rel-link"), "file.txt");
        File.CreateSymbolicLink(Path.Combine(root, "dir/abs-link"), "/etc/passwd");
        File.CreateSymbolicLink(Path.Combine(root, "dangling"), "no/such/target");
        Posix.MakeNode(Path.Combine(root, "fifo"), FileKind.Fifo, 0x1A4, 0, 0);

        File.WriteAllText(Path.Combine(root, "suid"), "#!/bin/sh\n");
        Directory.CreateDirectory(Path.Combine(root, "sgid-dir"));
        Directory.CreateDirectory(Path.Combine(root, "sticky"));

        string longFull = Path.Combine(root, LongPath);
        Directory.CreateDirectory(Path.GetDirectoryName(longFull)!);
        File.WriteAllText(longFull, "long");
        File.WriteAllText(Path.Combine(root, UnicodeName), "unicode");
        File.WriteAllText(Path.Combine(root, "odd\nname with \\ and = and %"), "odd");
        Directory.CreateDirectory(Path.Combine(root, "ディレクトリ"));

        bool devices = false, ownership = false, userXattrs = false;
        if (IsRoot)
        {
            Directory.CreateDirectory(Path.Combine(root, "dev"));
            Posix.MakeNode(Path.Combine(root, "dev/null"), FileKind.CharDevice, 0x1B6, 1, 3);
            Posix.MakeNode(Path.Combine(root, "dev/loop200"), FileKind.BlockDevice, 0x1B0, 7, 200);
            Posix.MakeNode(Path.Combine(root, "dev/bigminor"), FileKind.CharDevice, 0x180, 300, 70000);
            devices = true;
            File.WriteAllText(Path.Combine(root, "owned"), "owned");
            Posix.LChown(Path.Combine(root, "owned"), 1234, 5678);
            Posix.LChown(Path.Combine(root, "sgid-dir"), 1234, 5678);
            Posix.LChown(Path.Combine(root, "dangling"), 4321, 8765);
            Posix.LChown(Path.Combine(root, "suid"), 0, 0);
            File.WriteAllText(Path.Combine(root, "big-ids"), "beyond 07777777");
            Posix.LChown(Path.Combine(root, "big-ids"), 3_000_000, 3_000_001);
            ownership = true;
        }
        Posix.ChangeMode(Path.Combine(root, "suid"), 0x9ED);     // 04755
        Posix.ChangeMode(Path.Combine(root, "sgid-dir"), 0x5FD); // 02775
        Posix.ChangeMode(Path.Combine(root, "sticky"), 0x3FF);   // 01777

        if (withXattrs)
        {
            userXattrs = Posix.TrySetXattr(Path.Combine(root, "file.txt"), "user.comment", "hello xattr"u8) == 0;
            if (userXattrs)
            {
                Posix.TrySetXattr(Path.Combine(root, "file.txt"), "user.binary", [0, 1, 2, 255, 0, 10]);
                Posix.TrySetXattr(Path.Combine(root, "dir"), "user.on-dir", "d"u8);
                Posix.TrySetXattr(Path.Combine(root, "big.bin"), "user.%weird=name", "w"u8);
            }
            if (IsRoot)
            {
                // struct vfs_cap_data, revision 2, effective, permitted = CAP_NET_BIND_SERVICE.
                byte[] cap = [0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                Check(Posix.TrySetXattr(Path.Combine(root, "suid"), "security.capability", cap), "security.capability");
                Check(Posix.TrySetXattr(Path.Combine(root, "dir/hl1"), "trusted.t", [9, 8, 7]), "trusted.t");
            }
            // POSIX ACL (what setfacl -m u:1234:r writes): user::rw- user:1234:r-- group::r-- mask::r-- other::r--
            byte[] acl = Acl((0x01, 6, uint.MaxValue), (0x02, 4, 1234), (0x04, 4, uint.MaxValue), (0x10, 4, uint.MaxValue), (0x20, 4, uint.MaxValue));
            File.WriteAllText(Path.Combine(root, "acl-file"), "acl");
            Check(Posix.TrySetXattr(Path.Combine(root, "acl-file"), "system.posix_acl_access", acl), "system.posix_acl_access");
            Check(Posix.TrySetXattr(Path.Combine(root, "sgid-dir"), "system.posix_acl_default", acl), "system.posix_acl_default");
        }

        // Nanosecond mtimes everywhere, deepest first so that creating entries does not disturb them.
        long sec = 1_600_000_000;
        var all = Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories)
            .OrderByDescending(p => p.Count(c => c == '/')).ThenBy(p => p, StringComparer.Ordinal).ToList();
        uint ns = 1;
        foreach (string p in all)
        {
            Posix.SetTimes(p, sec++, ns);
            ns = (ns * 7919 + 13) % 1_000_000_000;
        }
        return new Built(userXattrs, devices, ownership);
    }

    private static void Check(int errno, string what)
    {
        if (errno != 0) throw new KaDeployException($"setting {what} in the sample tree failed (errno {errno}); the file system lacks xattr/ACL support");
    }

    private static byte[] Acl(params (ushort Tag, ushort Perm, uint Id)[] entries)
    {
        var b = new List<byte>(BitConverter.GetBytes(2u)); // POSIX_ACL_XATTR_VERSION
        foreach ((ushort tag, ushort perm, uint id) in entries)
        {
            b.AddRange(BitConverter.GetBytes(tag));
            b.AddRange(BitConverter.GetBytes(perm));
            b.AddRange(BitConverter.GetBytes(id));
        }
        return [.. b];
    }

    public static string Describe(Built b)
    {
        var sb = new StringBuilder();
        if (!b.UserXattrs) sb.Append("user.* xattrs unsupported here; ");
        if (!b.Devices) sb.Append("device nodes need root; ");
        if (!b.Ownership) sb.Append("chown needs root; ");
        return sb.ToString();
    }
}
