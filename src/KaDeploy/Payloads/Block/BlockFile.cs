using Microsoft.Win32.SafeHandles;

namespace KaDeploy.Payloads.Block;

/// <summary>An open block device or regular file, with what the block payloads need to know about it.</summary>
internal sealed class BlockFile : IDisposable
{
    private BlockFile(string path, SafeFileHandle handle, bool isBlockDevice, long length)
    {
        Path = path;
        Handle = handle;
        IsBlockDevice = isBlockDevice;
        Length = length;
    }

    public string Path { get; }
    public SafeFileHandle Handle { get; }
    public bool IsBlockDevice { get; }

    /// <summary>Size of the device, or length of the file when opened.</summary>
    public long Length { get; }

    /// <summary>Opens an existing file or device for reading.</summary>
    public static BlockFile OpenRead(string path)
    {
        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"cannot open {path}: {e.Message}", e);
        }
        return Describe(path, handle);
    }

    /// <summary>
    /// Opens a device, or opens (creating it if missing) a regular file, for writing. A block device that is mounted
    /// or otherwise in use is refused (O_EXCL). A regular file is truncated to zero length so that whatever it held
    /// cannot show through the holes of the new image. A missing path under /dev is refused rather than created: it
    /// is a mistyped device name, and a file there would fill memory.
    /// </summary>
    public static BlockFile OpenWrite(string path)
    {
        SafeFileHandle handle;
        if (File.Exists(path))
        {
            handle = BlockNative.OpenExclusiveForWrite(path);
        }
        else
        {
            if (System.IO.Path.GetFullPath(path).StartsWith("/dev/", StringComparison.Ordinal))
                throw new KaDeployException($"no such device {path}");
            try
            {
                handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.ReadWrite);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new KaDeployException($"cannot create {path}: {e.Message}", e);
            }
        }
        BlockFile file = Describe(path, handle);
        if (!file.IsBlockDevice)
        {
            try
            {
                RandomAccess.SetLength(handle, 0);
            }
            catch (IOException e)
            {
                file.Dispose();
                throw new KaDeployException($"cannot truncate {path}: {e.Message}", e);
            }
        }
        return file;
    }

    private static BlockFile Describe(string path, SafeFileHandle handle)
    {
        if (BlockNative.TryGetBlockDeviceSize(handle, out long size))
            return new BlockFile(path, handle, isBlockDevice: true, size);
        long length;
        try
        {
            length = RandomAccess.GetLength(handle);
        }
        catch (IOException)
        {
            length = BlockNative.SeekEnd(handle);
        }
        return new BlockFile(path, handle, isBlockDevice: false, length);
    }

    /// <summary>Reads until <paramref name="buffer"/> is full or the end of the file.</summary>
    public async ValueTask<int> ReadAtAsync(Memory<byte> buffer, long offset, CancellationToken cancellationToken)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n;
            try
            {
                n = await RandomAccess.ReadAsync(Handle, buffer[total..], offset + total, cancellationToken).ConfigureAwait(false);
            }
            catch (IOException e)
            {
                throw new KaDeployException($"reading {Path} at offset {offset + total} failed: {e.Message}", e);
            }
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    /// <summary>
    /// Writes all of <paramref name="data"/> at <paramref name="offset"/> on the calling thread, naming the target on
    /// failure: for bytes lent by a ring, which must be written before the next read ends their loan.
    /// </summary>
    public void WriteAt(ReadOnlySpan<byte> data, long offset)
    {
        try
        {
            RandomAccess.Write(Handle, data, offset);
        }
        catch (IOException e)
        {
            throw new KaDeployException($"writing {Path} at offset {offset} failed: {e.Message}", e);
        }
    }

    /// <summary>Writes all of <paramref name="data"/> at <paramref name="offset"/>, naming the target on failure.</summary>
    public async ValueTask WriteAtAsync(ReadOnlyMemory<byte> data, long offset, CancellationToken cancellationToken)
    {
        try
        {
            await RandomAccess.WriteAsync(Handle, data, offset, cancellationToken).ConfigureAwait(false);
        }
        catch (IOException e)
        {
            throw new KaDeployException($"writing {Path} at offset {offset} failed: {e.Message}", e);
        }
    }

    public void Sync() => BlockNative.Sync(Handle, Path);

    public void Dispose() => Handle.Dispose();
}
