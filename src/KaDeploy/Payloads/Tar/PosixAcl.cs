using System.Buffers.Binary;
using System.Buffers.Text;
using KaDeploy.Platform;

namespace KaDeploy.Payloads.Tar;

/// <summary>
/// Turns a POSIX.1e ACL in text form, as tar archives carry it in SCHILY.acl.access / SCHILY.acl.default, into the
/// binary value of the system.posix_acl_access / system.posix_acl_default xattr (linux/posix_acl_xattr.h), so it
/// is set with one setxattr and no libacl. Both spellings are read: GNU tar's (acl_to_text: one entry a line,
/// names, "#effective:" comments) and star's/libarchive's (comma-separated, "user:name:rwx:1000" with the numeric id
/// as a fourth field, which wins over the name).
/// </summary>
internal static class PosixAcl
{
    private const ushort UserObj = 0x01, User = 0x02, GroupObj = 0x04, Group = 0x08, Mask = 0x10, Other = 0x20;
    private const uint UndefinedId = uint.MaxValue;

    /// <summary>The xattr value; throws <see cref="FormatException"/> with the reason when the text is not an ACL.</summary>
    public static byte[] ToXattr(ReadOnlySpan<byte> text)
    {
        var entries = new List<(ushort Tag, ushort Perm, uint Id)>();
        int start = 0;
        for (int i = 0; i <= text.Length; i++)
        {
            if (i < text.Length && text[i] is not ((byte)',' or (byte)'\n')) continue;
            ReadOnlySpan<byte> entry = text[start..i];
            start = i + 1;
            int hash = entry.IndexOf((byte)'#');
            if (hash >= 0) entry = entry[..hash];
            entry = entry.Trim(" \t\r"u8);
            if (entry.IsEmpty) continue;
            if (entry.StartsWith("default:"u8)) entry = entry[8..];
            else if (entry.StartsWith("d:"u8)) entry = entry[2..];
            entries.Add(Parse(entry));
        }
        if (entries.Count == 0) throw new FormatException("empty ACL");
        if (!entries.Exists(e => e.Tag == Mask) && entries.Exists(e => e.Tag is User or Group))
        {
            // Named entries need a mask; star and older writers leave it out. Compute it as acl_calc_mask and
            // setfacl do: the union of the group class (named users, owning group, named groups).
            ushort mask = 0;
            foreach (var e in entries) if (e.Tag is User or GroupObj or Group) mask |= e.Perm;
            entries.Add((Mask, mask, UndefinedId));
        }
        entries.Sort((a, b) => a.Tag != b.Tag ? a.Tag.CompareTo(b.Tag) : a.Id.CompareTo(b.Id));
        var value = new byte[4 + 8 * entries.Count];
        BinaryPrimitives.WriteUInt32LittleEndian(value, 2); // POSIX_ACL_XATTR_VERSION
        for (int i = 0; i < entries.Count; i++)
        {
            Span<byte> e = value.AsSpan(4 + 8 * i, 8);
            BinaryPrimitives.WriteUInt16LittleEndian(e, entries[i].Tag);
            BinaryPrimitives.WriteUInt16LittleEndian(e[2..], entries[i].Perm);
            BinaryPrimitives.WriteUInt32LittleEndian(e[4..], entries[i].Id);
        }
        return value;
    }

    /// <summary>
    /// The text form of a system.posix_acl_* xattr value, comma-separated with numeric qualifiers
    /// ("user::rw-,user:1234:rw-,group::r--,mask::rw-,other::r--"), which GNU tar (acl_from_text), bsdtar and
    /// <see cref="ToXattr"/> all read back to the same value. Null when the value is not a version-2 ACL.
    /// </summary>
    public static byte[]? ToText(ReadOnlySpan<byte> xattr)
    {
        if (xattr.Length < 4 || (xattr.Length - 4) % 8 != 0 || BinaryPrimitives.ReadUInt32LittleEndian(xattr) != 2) return null;
        var sb = new System.Text.StringBuilder();
        for (int at = 4; at < xattr.Length; at += 8)
        {
            ushort tag = BinaryPrimitives.ReadUInt16LittleEndian(xattr[at..]);
            ushort perm = BinaryPrimitives.ReadUInt16LittleEndian(xattr[(at + 2)..]);
            uint id = BinaryPrimitives.ReadUInt32LittleEndian(xattr[(at + 4)..]);
            string? prefix = tag switch
            {
                UserObj => "user:",
                User => $"user:{id}",
                GroupObj => "group:",
                Group => $"group:{id}",
                Mask => "mask:",
                Other => "other:",
                _ => null,
            };
            if (prefix == null) return null;
            if (sb.Length > 0) sb.Append(',');
            sb.Append(prefix);
            sb.Append(':').Append((perm & 4) != 0 ? 'r' : '-').Append((perm & 2) != 0 ? 'w' : '-').Append((perm & 1) != 0 ? 'x' : '-');
        }
        return System.Text.Encoding.ASCII.GetBytes(sb.ToString());
    }

    private static (ushort, ushort, uint) Parse(ReadOnlySpan<byte> entry)
    {
        Span<Range> parts = stackalloc Range[5];
        int n = 0;
        foreach (Range r in entry.Split((byte)':'))
        {
            if (n == parts.Length) throw new FormatException($"ACL entry '{ByteNames.Printable(entry)}' has too many fields");
            parts[n++] = r;
        }
        if (n is < 2 or > 4) throw new FormatException($"ACL entry '{ByteNames.Printable(entry)}' is not tag:qualifier:perms");
        ReadOnlySpan<byte> tag = entry[parts[0]];
        ReadOnlySpan<byte> qualifier = n >= 3 ? entry[parts[1]] : default;
        ReadOnlySpan<byte> perms = n >= 3 ? entry[parts[2]] : entry[parts[1]];
        ReadOnlySpan<byte> numeric = n == 4 ? entry[parts[3]] : default;
        ushort perm = Perms(perms, entry);
        bool isUser = tag.SequenceEqual("user"u8) || tag.SequenceEqual("u"u8);
        bool isGroup = tag.SequenceEqual("group"u8) || tag.SequenceEqual("g"u8);
        if (tag.SequenceEqual("mask"u8) || tag.SequenceEqual("m"u8)) return (Mask, perm, UndefinedId);
        if (tag.SequenceEqual("other"u8) || tag.SequenceEqual("o"u8)) return (Other, perm, UndefinedId);
        if (!isUser && !isGroup) throw new FormatException($"ACL entry '{ByteNames.Printable(entry)}' has an unknown tag");
        if (qualifier.IsEmpty) return (isUser ? UserObj : GroupObj, perm, UndefinedId);
        uint id;
        if (!numeric.IsEmpty && Utf8Parser.TryParse(numeric, out uint num, out int used) && used == numeric.Length)
        {
            id = num;
        }
        else if (Utf8Parser.TryParse(qualifier, out uint q, out int qused) && qused == qualifier.Length)
        {
            id = q;
        }
        else
        {
            // GNU tar stores names (acl_to_text); it resolves them on extraction the same way.
            id = (isUser ? PosixAt.LookupUser(qualifier) : PosixAt.LookupGroup(qualifier))
                ?? throw new FormatException($"ACL names {(isUser ? "user" : "group")} '{ByteNames.Printable(qualifier)}', unknown on this system and without a numeric id");
        }
        return (isUser ? User : Group, perm, id);
    }

    private static ushort Perms(ReadOnlySpan<byte> p, ReadOnlySpan<byte> entry)
    {
        ushort v = 0;
        foreach (byte c in p)
        {
            v |= c switch
            {
                (byte)'r' => (ushort)4,
                (byte)'w' => (ushort)2,
                (byte)'x' => (ushort)1,
                (byte)'-' => (ushort)0,
                _ => throw new FormatException($"ACL entry '{ByteNames.Printable(entry)}' has bad permissions"),
            };
        }
        return v;
    }
}
