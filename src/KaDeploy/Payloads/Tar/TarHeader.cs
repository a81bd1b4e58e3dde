namespace KaDeploy.Payloads.Tar;

/// <summary>What an archive entry creates.</summary>
internal enum TarEntryKind
{
    Regular,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
}

/// <summary>
/// One archive entry as <see cref="TarArchiveReader"/> decoded it, with every extension (GNU long names, pax
/// records global and local, GNU sparse maps of every version, xattrs, ACLs) already applied. Names, link targets,
/// user and group names and xattr names and values are the archive's bytes, never decoded as text.
/// </summary>
internal sealed class TarHeader
{
    /// <summary>The entry's name as stored (may start with "./", may end with "/").</summary>
    public byte[] Name = [];

    /// <summary>Hard-link or symlink target, verbatim.</summary>
    public byte[] LinkName = [];

    public TarEntryKind Kind;

    /// <summary>The header's type flag, for messages.</summary>
    public byte TypeFlag;

    /// <summary>Permission and special bits (07777).</summary>
    public uint Mode;

    public uint Uid;
    public uint Gid;
    public byte[] UserName = [];
    public byte[] GroupName = [];
    public long MtimeSec;
    public uint MtimeNsec;
    public uint DevMajor;
    public uint DevMinor;

    /// <summary>Bytes <see cref="TarArchiveReader.ReadDataSegmentAsync"/> delivers for this entry (for a sparse file, the packed data segments).</summary>
    public long DataLength;

    /// <summary>The file's size: <see cref="DataLength"/>, or the sparse file's full length.</summary>
    public long RealSize;

    /// <summary>For a sparse file, the data segments in file order; the data stream holds them back to back.</summary>
    public List<(long Offset, long Length)>? Sparse;

    /// <summary>Extended attributes (SCHILY.xattr.*, LIBARCHIVE.xattr.*, RHT.security.selinux), in archive order.</summary>
    public List<(byte[] Name, byte[] Value)> Xattrs = [];

    /// <summary>POSIX.1e access ACL in text form (SCHILY.acl.access), or null.</summary>
    public byte[]? AclAccess;

    /// <summary>POSIX.1e default ACL in text form (SCHILY.acl.default), or null.</summary>
    public byte[]? AclDefault;

    /// <summary>Set when the entry carries something that cannot be reproduced (the extractor refuses it with this reason).</summary>
    public string? Unsupported;

    /// <summary>"v7", "ustar", "gnu", "pax", "star": the header format, for messages.</summary>
    public string Format = "";

    /// <summary>Offset of the entry's (first) header in the archive.</summary>
    public long Offset;
}
