using System.Diagnostics;
using KaDeploy.IO;
using ZstdSharp;

namespace KaDeploy.Payloads.Image;

/// <summary>
/// Decompresses an image file. zstd in process (ZstdSharp: every frame, skippable frames skipped, as pzstd writes
/// them). gzip, xz and bzip2 through the system's own decompressor, as GNU tar -z/-J/-j does: it reads every gzip
/// member (pigz and concatenated .tgz files), checks every member's CRC and length, and reports a truncated file,
/// none of which GZipStream does; its exit status is checked when the output ends, so a corrupt or truncated image
/// fails the stream instead of ending it early.
/// </summary>
internal static class ImageDecompression
{
    public static Stream Open(string path, ImageCompression compression)
    {
        if (compression == ImageCompression.Zstd)
        {
            FileStream file = OpenFile(path);
            return new DecompressionStream(file);
        }
        string tool = compression switch
        {
            ImageCompression.Gzip => "gzip",
            ImageCompression.Xz => "xz",
            ImageCompression.Bzip2 => "bzip2",
            _ => throw new ArgumentOutOfRangeException(nameof(compression)),
        };
        return new ProcessOutputStream(path, tool);
    }

    /// <summary>Up to <paramref name="count"/> decompressed bytes from the start; a file that does not decode is refused.</summary>
    public static byte[] ReadHead(string path, ImageCompression compression, int count)
    {
        var head = new byte[count];
        int n;
        try
        {
            using Stream s = Open(path, compression);
            n = s.ReadAtLeast(head, count, throwOnEndOfStream: false);
        }
        catch (Exception e) when (e is IOException or InvalidDataException or ZstdException or EndOfStreamException or KaDeployException)
        {
            throw new KaDeployException(
                $"image {path} looks {PayloadSniffer.Name(compression)}-compressed but cannot be decompressed: {e.Message}", e);
        }
        return head[..n];
    }

    internal static FileStream OpenFile(string path)
    {
        try
        {
            return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0, FileOptions.SequentialScan);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new KaDeployException($"cannot read image {path}: {e.Message}", e);
        }
    }

    /// <summary>The stdout of "tool -dc -- path"; at its end the tool's exit status is checked.</summary>
    private sealed class ProcessOutputStream : SequentialReadStream
    {
        private readonly Process _process;
        private readonly Stream _out;
        private readonly Task<string> _stderr;
        private readonly string _path;
        private readonly string _tool;
        private bool _checked;

        public ProcessOutputStream(string path, string tool)
        {
            _path = path;
            _tool = tool;
            var psi = new ProcessStartInfo(tool)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                RedirectStandardInput = false,
                UseShellExecute = false,
            };
            foreach (string a in (string[])["-dc", "--", path]) psi.ArgumentList.Add(a);
            try
            {
                _process = Process.Start(psi) ?? throw new KaDeployException($"cannot start {tool}");
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                throw new KaDeployException($"image {path} needs {tool} to decompress it: {e.Message}", e);
            }
            _out = _process.StandardOutput.BaseStream;
            _stderr = _process.StandardError.ReadToEndAsync();
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            int n = _out.Read(buffer);
            if (n == 0 && !buffer.IsEmpty) CheckExit();
            return n;
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            int n = await _out.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
            if (n == 0 && !buffer.IsEmpty) CheckExit();
            return n;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        private void CheckExit()
        {
            if (_checked) return;
            _checked = true;
            _process.WaitForExit();
            if (_process.ExitCode != 0)
            {
                string why = _stderr.GetAwaiter().GetResult().Trim().Replace('\n', ' ');
                throw new KaDeployException($"image {_path} is corrupt or truncated: {_tool} exited {_process.ExitCode}: {why}");
            }
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                try
                {
                    if (!_process.HasExited) _process.Kill();
                    _process.WaitForExit();
                }
                catch (InvalidOperationException)
                {
                    // already gone
                }
                _out.Dispose();
                _process.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
