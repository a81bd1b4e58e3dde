// CPU cost per byte of the hashes ka-deploy runs on every payload byte, at the piece sizes it feeds them:
// XxHash3-64 one-shot (the per-frame check), XxHash128 streaming Append (the end-to-end digest), XxHash128
// one-shot, and a two-level XXH3-128 (one-shot XXH3-128 of each 64 KiB piece, the 16-byte results appended).
// "hot": the same 256 KiB (or one piece, if larger) re-hashed (in cache); "cold": a 512 MiB buffer walked once per round (memory speed).
// Figures are GiB per CPU-second of this process (Environment.CpuUsage), so other load matters less.
using System.Diagnostics;
using System.IO.Hashing;

var rnd = new Random(1);
var cold = new byte[512 << 20];
rnd.NextBytes(cold);
int[] sizes = args.Length > 0 ? args.Select(int.Parse).ToArray() : [512, 4096, 16384, 65536, 1 << 20];
Console.WriteLine($"CPU: {File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':')[1].Trim()}; Vector256 accelerated: {System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated}");
Console.WriteLine("method                       piece     hot GiB/CPU-s  cold GiB/CPU-s");
ulong sink = 0;
foreach (int size in sizes)
{
    Row("XxHash3-64 one-shot", size, (span, off) => sink += XxHash3.HashToUInt64(span, off));
    var stream = new XxHash128();
    Row("XxHash128 Append", size, (span, _) => stream.Append(span));
    sink += (ulong)stream.GetCurrentHashAsUInt128();
    Row("XxHash128 one-shot", size, (span, off) => sink += (ulong)XxHash128.HashToUInt128(span, off));
    var top = new XxHash128();
    var leaf = new byte[16];
    Row("two-level XXH3-128", size, (span, off) =>
    {
        System.Buffers.Binary.BinaryPrimitives.WriteUInt128LittleEndian(leaf, XxHash128.HashToUInt128(span, off));
        top.Append(leaf);
    });
}
Console.WriteLine($"(checksum {sink:x})");

void Row(string name, int size, Action<ReadOnlySpan<byte>, long> hash)
{
    double h = Measure(cold.AsMemory(0, Math.Max(256 << 10, size)), size, hash), c = Measure(cold, size, hash);
    Console.WriteLine($"{name,-28} {size,8}  {h,12:0.00}  {c,12:0.00}");
}

static double Measure(Memory<byte> buffer, int size, Action<ReadOnlySpan<byte>, long> hash)
{
    long bytes = 0;
    var t0 = Environment.CpuUsage.TotalTime;
    var wall = Stopwatch.StartNew();
    while ((Environment.CpuUsage.TotalTime - t0).TotalSeconds < 0.6 && wall.Elapsed.TotalSeconds < 20)
    {
        var span = buffer.Span;
        for (int off = 0; off + size <= span.Length; off += size) hash(span.Slice(off, size), off);
        bytes += span.Length / size * (long)size;
    }
    return bytes / (double)(1 << 30) / (Environment.CpuUsage.TotalTime - t0).TotalSeconds;
}
