using System.Buffers;
using System.Runtime.InteropServices;

namespace KaDeploy.Relay;

/// <summary>
/// Where a ring's segments live (issue 10). On Linux, one anonymous mapping per ring, aligned to 2 MiB and advised
/// MADV_HUGEPAGE, so that the fresh memory a ring touches (up to 1 GiB for the server's memory spool) is populated and
/// charged 2 MiB at a time instead of 4 KiB at a time. Each segment is populated with one madvise(2) call
/// (MADV_POPULATE_WRITE, Linux 5.14) when it is first lent, instead of one page fault per page when the first frame
/// lands in it. Best effort: where mmap fails (or off Linux), segments are pinned arrays as before; where transparent
/// huge pages are off or none is free, the kernel maps 4 KiB pages; an older kernel leaves the pages to be faulted in.
/// </summary>
internal static partial class RingMemory
{
    private const int PROT_READ = 1, PROT_WRITE = 2;
    private const int MAP_PRIVATE = 0x02, MAP_ANONYMOUS = 0x20, MAP_NORESERVE = 0x4000;
    private const int MADV_DONTNEED = 4, MADV_HUGEPAGE = 14, MADV_POPULATE_WRITE = 23;
    internal const int PageSize = 4096;
    internal const int HugePageSize = 2 << 20;
    private static volatile bool s_noPopulate;

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nuint length, int advice);

    [LibraryImport("libc", EntryPoint = "mmap")]
    private static partial nint Mmap(nint address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "munmap")]
    private static partial int Munmap(nint address, nuint length);

    /// <summary>
    /// The memory of a ring of <paramref name="bytes"/>, or null: its segments are then pinned arrays
    /// (<see cref="RingSegment.Pinned"/>). Only the address range is reserved here (MAP_NORESERVE): pages are
    /// populated segment by segment as the ring first lends them, so a ring that carries 1 MiB costs 1 MiB.
    /// </summary>
    public static RingMapping? TryMap(long bytes, RingMemoryKind kind)
    {
        if (kind == RingMemoryKind.Pinned || !OperatingSystem.IsLinux() || bytes <= 0) return null;
        // Room to align the start to 2 MiB: a huge page is only used where an aligned 2 MiB lies whole in the mapping.
        nuint length = (nuint)(bytes + HugePageSize);
        nint address = Mmap(0, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (address == -1) return null;
        nint start = (address + HugePageSize - 1) & ~(nint)(HugePageSize - 1);
        // Failing here (THP compiled out, or "never") only means 4 KiB pages, as with the arrays.
        if (kind == RingMemoryKind.HugePages) _ = Madvise(start, (nuint)bytes, MADV_HUGEPAGE);
        return new RingMapping(address, length, start, bytes);
    }

    /// <summary>Populates the whole pages of [<paramref name="start"/>, +<paramref name="length"/>) for writing.</summary>
    internal static void Populate(nint start, long length)
    {
        // Outside the ring's lock (see RelayRing.TryAcquire): a megabyte takes a few hundred microseconds, the consumers must not wait for it.
        if (s_noPopulate || !OperatingSystem.IsLinux()) return;
        nint first = (start + PageSize - 1) & ~(nint)(PageSize - 1);
        nint end = (nint)(start + length) & ~(nint)(PageSize - 1);
        if (end <= first) return;
        if (Madvise(first, (nuint)(end - first), MADV_POPULATE_WRITE) != 0) s_noPopulate = true;
    }

    internal static void Discard(nint start, nuint length) => _ = Madvise(start, length, MADV_DONTNEED);

    internal static void Unmap(nint address, nuint length) => _ = Munmap(address, length);

    /// <summary>Returns <paramref name="run"/> after populating <paramref name="fresh"/>, the segment just made for it, if any.</summary>
    public static Memory<byte> Populated(Memory<byte> run, RingSegment? fresh)
    {
        fresh?.Populate();
        return run;
    }
}

/// <summary>Where a ring's segments live: the default, or (tests, comparisons) without huge pages or without a mapping.</summary>
internal enum RingMemoryKind
{
    /// <summary>One mapping, advised MADV_HUGEPAGE.</summary>
    HugePages,
    /// <summary>One mapping, 4 KiB pages.</summary>
    Mapped,
    /// <summary>Pinned arrays, one per segment.</summary>
    Pinned,
}

/// <summary>
/// One ring's anonymous mapping. It is unmapped by the finalizer only, that is once nothing refers to it any more:
/// every <see cref="RingSegment"/> over it refers to it, and so does every <see cref="Memory{T}"/> and every pin
/// (<see cref="MemoryHandle"/>) of a segment. A child sender, a spool reader or a socket operation still using a frame
/// keeps the memory mapped, whatever its ring's owner did. <see cref="Release"/> only gives the pages back, and the
/// ring calls it only when no consumer and no producer is left (<see cref="RelayRing.Dispose"/>).
/// </summary>
internal sealed class RingMapping
{
    private readonly nint _address;
    private readonly nuint _length;
    private int _released;

    internal RingMapping(nint address, nuint length, nint start, long bytes)
    {
        _address = address;
        _length = length;
        Start = start;
        Length = bytes;
    }

    /// <summary>First byte of the ring's memory (2 MiB aligned).</summary>
    internal nint Start { get; }

    /// <summary>Bytes of the ring's memory.</summary>
    internal long Length { get; }

    /// <summary>True once <see cref="Release"/> ran.</summary>
    internal bool Released => Volatile.Read(ref _released) != 0;

    /// <summary>
    /// Gives the pages back to the system at once (MADV_DONTNEED), keeping the addresses mapped: whatever still read
    /// them would see zeros, never fault. The ring calls it when it is disposed with nobody left to read or write.
    /// </summary>
    internal void Release()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0) RingMemory.Discard(_address, _length);
    }

    ~RingMapping() => RingMemory.Unmap(_address, _length);
}

/// <summary>
/// One segment of a ring as <see cref="Memory{T}"/>: a slice of the ring's <see cref="RingMapping"/>, or a pinned array
/// where there is no mapping. Pinned by nature either way: sockets and files read and write it in place.
/// </summary>
internal sealed unsafe class RingSegment : MemoryManager<byte>
{
    private readonly object _owner; // the mapping or the array: alive as long as this segment (and any Memory over it) is
    private readonly byte* _start;
    private readonly int _length;

    private RingSegment(object owner, byte* start, int length)
    {
        _owner = owner;
        _start = start;
        _length = length;
    }

    /// <summary>The <paramref name="length"/> bytes at <paramref name="offset"/> in <paramref name="mapping"/>.</summary>
    public static RingSegment InMapping(RingMapping mapping, long offset, int length)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(offset + length, mapping.Length);
        return new RingSegment(mapping, (byte*)(mapping.Start + (nint)offset), length);
    }

    /// <summary>A pinned array of <paramref name="length"/> bytes: the heap's own memory, when the ring has no mapping.</summary>
    public static RingSegment Pinned(int length)
    {
        // Pinned heap: the GC never moves or copies it, so its address stays valid as long as the array lives.
        var array = GC.AllocateUninitializedArray<byte>(length, pinned: true);
        return new RingSegment(array, (byte*)Marshal.UnsafeAddrOfPinnedArrayElement(array, 0), length);
    }

    /// <summary>Bytes in this segment.</summary>
    public int Length => _length;

    /// <summary>The mapping this segment lies in, or null for a pinned array.</summary>
    internal RingMapping? Mapping => _owner as RingMapping;

    /// <summary>Address of the first byte (tests).</summary>
    internal nint Address => (nint)_start;

    /// <summary>Populates the segment's pages before its first use.</summary>
    public void Populate() => RingMemory.Populate((nint)_start, _length);

    /// <inheritdoc/>
    public override Span<byte> GetSpan() => new(_start, _length);

    /// <inheritdoc/>
    public override MemoryHandle Pin(int elementIndex = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(elementIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(elementIndex, _length);
        // The handle refers to this segment (its "pinnable"), so the memory stays mapped while an I/O holds it.
        return new MemoryHandle(_start + elementIndex, default, this);
    }

    /// <inheritdoc/>
    public override void Unpin() { }

    /// <inheritdoc/>
    protected override void Dispose(bool disposing) { }
}
