namespace KaDeploy.Platform;

/// <summary>The file type bits of st_mode (S_IFMT).</summary>
public enum FileKind
{
    Unknown = 0,
    Fifo = 0x1000,
    CharDevice = 0x2000,
    Directory = 0x4000,
    BlockDevice = 0x6000,
    Regular = 0x8000,
    Symlink = 0xA000,
    Socket = 0xC000,
}

/// <summary>What <c>statx(AT_SYMLINK_NOFOLLOW)</c> says about one path.</summary>
public readonly record struct FileStatus(
    FileKind Kind,
    uint Mode,
    uint Uid,
    uint Gid,
    long Size,
    long Blocks,
    uint Nlink,
    ulong Inode,
    uint DevMajor,
    uint DevMinor,
    uint RdevMajor,
    uint RdevMinor,
    long MtimeSec,
    uint MtimeNsec,
    long AtimeSec,
    uint AtimeNsec)
{
    /// <summary>Permission and special bits (07777).</summary>
    public uint Permissions => Mode & 0xFFF;

    /// <summary>Identifies the inode across the whole machine (with <see cref="Inode"/>).</summary>
    public ulong Device => ((ulong)DevMajor << 32) | DevMinor;
}
