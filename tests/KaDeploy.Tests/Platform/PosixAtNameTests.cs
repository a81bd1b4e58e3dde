using System.Text;
using KaDeploy.Platform;

namespace KaDeploy.Tests.Platform;

/// <summary>
/// Names handed to the kernel NUL-terminated on the stack when they fit, on the heap when they do not: the longest
/// name a file system allows (255 bytes, not UTF-8 here) and a path longer than the stack room both reach the right file.
/// </summary>
public sealed class PosixAtNameTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kd-posixat-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(255)] // fits the 256 bytes with its NUL
    [InlineData(256)] // does not: the heap copy
    [InlineData(4000)]
    public void A_name_comes_back_nul_terminated_and_unchanged(int length)
    {
        byte[] name = [.. Enumerable.Range(0, length).Select(i => (byte)(i % 255 + 1))];
        var scratch = new byte[256];
        scratch.AsSpan().Fill(0xAA); // stack memory is not zeroed: the NUL must be written
        var z = PosixAt.Z(name, scratch);
        Assert.Equal(length + 1, z.Length);
        Assert.Equal(0, z[length]);
        Assert.True(z[..length].SequenceEqual(name));
    }

    [SkippableFact]
    public void The_longest_name_and_a_long_path_reach_the_same_file_and_its_xattr()
    {
        // 255 bytes, with bytes that are not UTF-8: the name is bytes all the way to the kernel.
        byte[] name = [.. Enumerable.Repeat((byte)'n', 250), 0xff, 0xfe, 0x80, (byte)'z', (byte)'z'];
        Assert.Equal(255, name.Length);
        int dirfd = PosixAt.OpenDirectoryPath(Encoding.UTF8.GetBytes(_dir), followFinal: true, out int errno);
        Assert.True(dirfd >= 0, $"open {_dir}: errno {errno}");
        try
        {
            using (var file = PosixAt.CreateFile(dirfd, name, 0x1A4, out errno))
                Assert.True(file is not null, $"create: errno {errno}");
            int rc = PosixAt.SetXattrAt(dirfd, name, "user.kd"u8, "value"u8);
            Skip.If(rc == LinuxNative.EOPNOTSUPP, $"{_dir}: the file system takes no user xattrs (EOPNOTSUPP)");
            Assert.Equal(0, rc);

            byte[] path = [.. Encoding.UTF8.GetBytes(_dir), (byte)'/', .. name];
            Assert.True(path.Length > 256);
            var byName = PosixAt.ListXattrsAt(dirfd, name, path, out errno);
            var byPath = PosixAt.ListXattrs(path, out int pathErrno);
            Assert.True(byName is not null, $"listxattr by name: errno {errno}");
            Assert.True(byPath is not null, $"listxattr by path: errno {pathErrno}");
            Assert.Contains(byName, n => n.AsSpan().SequenceEqual("user.kd"u8));
            Assert.Contains(byPath, n => n.AsSpan().SequenceEqual("user.kd"u8));
            Assert.Equal("value"u8.ToArray(), PosixAt.GetXattrAt(dirfd, name, path, "user.kd"u8, out errno));
            Assert.Equal("value"u8.ToArray(), PosixAt.GetXattr(path, "user.kd"u8, out errno));
        }
        finally
        {
            // By its bytes: .NET's own delete cannot name a file whose name is not UTF-8.
            PosixAt.Remove(dirfd, name, directory: false);
            LinuxNative.Close(dirfd);
        }
    }
}
