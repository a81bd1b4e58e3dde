using KaDeploy.IO;
using System.Globalization;
using System.Text;

namespace KaDeploy.Payloads.Tar;

/// <summary>
/// A read-only pass-through that follows the tar block structure as TarReader pulls bytes, and fails a
/// metadata entry (pax 'x'/'g', GNU 'L'/'K') whose declared size exceeds a limit before TarReader can allocate it:
/// TarReader in .NET 10 rents a buffer of the declared size (up to 2 GiB) for such entries. Unseekable on purpose,
/// so TarReader reads every byte through here.
/// </summary>
internal sealed class TarStreamGuard(Stream inner, int maxMetadataBytes) : SequentialReadStream
{
    private const int Block = 512;
    private readonly byte[] _header = new byte[Block];
    private int _headerFill;
    private long _skip;             // data and padding bytes of the current entry still to pass
    private byte[] _pax = new byte[4096]; // data of a pax 'x' header being captured (to learn a "size" override)
    private int _paxLen = -1;             // -1: not capturing
    private int _paxFill;
    private long? _nextSize;


    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        int n = inner.Read(buffer);
        Observe(buffer[..n]);
        return n;
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        int n = await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
        Observe(buffer.Span[..n]);
        return n;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    private void Observe(ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            if (_paxLen >= 0)
            {
                int n = Math.Min(data.Length, _paxLen - _paxFill);
                data[..n].CopyTo(_pax.AsSpan(_paxFill));
                _paxFill += n;
                data = data[n..];
                if (_paxFill == _paxLen)
                {
                    _nextSize = SizeRecord(_pax.AsSpan(0, _paxLen));
                    _paxLen = -1;
                }
                continue;
            }
            if (_skip > 0)
            {
                int n = (int)Math.Min(data.Length, _skip);
                _skip -= n;
                data = data[n..];
                continue;
            }
            int h = Math.Min(data.Length, Block - _headerFill);
            data[..h].CopyTo(_header.AsSpan(_headerFill));
            _headerFill += h;
            data = data[h..];
            if (_headerFill == Block)
            {
                _headerFill = 0;
                OnHeader();
            }
        }
    }

    private void OnHeader()
    {
        if (!_header.AsSpan().ContainsAnyExcept((byte)0)) return; // end-of-archive block
        byte type = _header[156];
        long size = ParseNumber(_header.AsSpan(124, 12));
        if (size < 0) return; // unparsable: TarReader reports it
        switch (type)
        {
            case (byte)'x' or (byte)'g' or (byte)'L' or (byte)'K':
                if (size > maxMetadataBytes)
                {
                    throw new KaDeployException(
                        $"refusing tar stream: a '{(char)type}' metadata entry of {size} bytes (limit {maxMetadataBytes})");
                }
                _skip = Padded(size) - size;
                if (type == 'x' && size > 0)
                {
                    if (_pax.Length < size) _pax = new byte[Math.Max(size, 2L * _pax.Length)];
                    _paxLen = (int)size;
                    _paxFill = 0;
                }
                else
                {
                    _skip = Padded(size);
                }
                break;
            default:
                long effective = _nextSize ?? size;
                _nextSize = null;
                _skip = effective > TarTreeSink.MaxEntrySize ? long.MaxValue : Padded(effective);
                break;
        }
    }

    private static long Padded(long size) => (size + Block - 1) / Block * Block;

    // Octal, or GNU base-256 (high bit set); -1 when unparsable.
    private static long ParseNumber(ReadOnlySpan<byte> field)
    {
        if ((field[0] & 0x80) != 0)
        {
            if ((field[0] & 0x40) != 0) return -1;
            long v = field[0] & 0x3F;
            for (int i = 1; i < field.Length; i++)
            {
                if (v > (long.MaxValue >> 8)) return long.MaxValue;
                v = (v << 8) | field[i];
            }
            return v;
        }
        long r = 0;
        foreach (byte b in field)
        {
            if (b is 0 or (byte)' ') { if (r > 0) break; continue; }
            if (b is < (byte)'0' or > (byte)'7') return -1;
            r = r * 8 + (b - '0');
            if (r > (1L << 60)) return long.MaxValue;
        }
        return r;
    }

    // The value of a "size" record in pax data, if any.
    private static long? SizeRecord(ReadOnlySpan<byte> pax)
    {
        long? result = null;
        while (!pax.IsEmpty)
        {
            int sp = pax.IndexOf((byte)' ');
            if (sp <= 0 || !int.TryParse(Encoding.ASCII.GetString(pax[..sp]), NumberStyles.None, CultureInfo.InvariantCulture, out int len) ||
                len <= sp || len > pax.Length)
            {
                return result;
            }
            ReadOnlySpan<byte> rec = pax[(sp + 1)..len];
            if (rec.StartsWith("size="u8) &&
                long.TryParse(Encoding.ASCII.GetString(rec[5..].TrimEnd((byte)'\n')), NumberStyles.None, CultureInfo.InvariantCulture, out long s))
            {
                result = s;
            }
            pax = pax[len..];
        }
        return result;
    }
}
