using CsCheck;
using KaDeploy.Fuzz;

namespace KaDeploy.Tests.Fuzz;

/// <summary>
/// The fuzz targets (fuzz/KaDeploy.Fuzz) inside the normal test run: each decoder gets valid inputs
/// mutated (bit flips, cuts, splices, inserted and overwritten runs) and plain random bytes for a
/// fixed budget, and must either accept them or refuse them with its one-line exception. Anything
/// else escaping (an index out of range, a null reference, an allocation the input asked for) fails
/// the test with CsCheck's seed, so the failure replays. AFL runs the same targets for longer (fuzz/run).
/// </summary>
public class DecoderPropertyTests
{
    /// <summary>Seconds each target gets: enough for a few thousand inputs, small enough for every run.</summary>
    private const int Budget = 3;

    private static readonly Dictionary<string, List<byte[]>> SeedInputs = Seeds.All().ToDictionary(s => s.Name, s => s.Inputs);

    /// <summary>Valid inputs of <paramref name="target"/>, mutated; one in eight is random bytes.</summary>
    internal static Gen<byte[]> Inputs(string target)
    {
        var seeds = SeedInputs[target];
        var random = Gen.Byte.Array[0, 512];
        var mutated = Gen.Select(Gen.Int[0, seeds.Count - 1], Gen.Int[1, 8], Gen.ULong, (i, n, s) => Mutate(seeds[i], n, s));
        return Gen.Frequency((1, random), (7, mutated));
    }

    private static byte[] Mutate(byte[] seed, int count, ulong state)
    {
        var rng = new Random((int)state ^ (int)(state >> 32));
        var data = new List<byte>(seed);
        for (int k = 0; k < count; k++)
        {
            int op = rng.Next(6);
            int pos = data.Count == 0 ? 0 : rng.Next(data.Count);
            switch (op)
            {
                case 0 when data.Count > 0: data[pos] ^= (byte)(1 << rng.Next(8)); break;
                case 1 when data.Count > 0: data[pos] = (byte)(rng.Next(2) == 0 ? 0xFF : rng.Next(256)); break;
                case 2: data.RemoveRange(pos, rng.Next(data.Count - pos + 1)); break;
                case 3: data.InsertRange(pos, Enumerable.Range(0, rng.Next(1, 64)).Select(_ => (byte)rng.Next(256))); break;
                case 4 when data.Count >= 8: // an interesting integer over 1, 2, 4 or 8 bytes
                    int width = 1 << rng.Next(4);
                    if (pos + width > data.Count) pos = data.Count - width;
                    ulong v = rng.Next(4) switch { 0 => 0, 1 => ulong.MaxValue, 2 => 0x7FFF_FFFF, _ => (ulong)rng.NextInt64() };
                    for (int b = 0; b < width; b++) data[pos + b] = (byte)(v >> (8 * b));
                    break;
                case 5 when data.Count > 1: // duplicate a slice (repeated frames, records, entries)
                    int len = rng.Next(1, Math.Min(256, data.Count - pos) + 1);
                    data.InsertRange(pos, data.GetRange(pos, len));
                    break;
            }
        }
        return [.. data];
    }

    public static TheoryData<string> Targets => new(FuzzTargets.All.Keys);

    [Theory]
    [MemberData(nameof(Targets))]
    public void Decoder_accepts_or_refuses_cleanly(string target)
    {
        var run = FuzzTargets.All[target];
        foreach (var seed in SeedInputs[target]) run(seed); // valid inputs pass first
        // One thread: the file-backed targets share a scratch path per process.
        Inputs(target).Sample(run, time: Budget, threads: 1);
    }
}
