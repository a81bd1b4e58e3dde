using KaDeploy.Fuzz;
using SharpFuzz;

// Usage: KaDeploy.Fuzz TARGET          (under afl-fuzz, instrumented; fuzz/run does it)
//        KaDeploy.Fuzz --seeds DIR     (writes valid starting inputs for every target)
//        KaDeploy.Fuzz TARGET FILE...  (replays inputs, e.g. a crash AFL saved)
if (args is ["--seeds", var seedDir])
{
    Seeds.Write(seedDir);
    return 0;
}
if (args.Length == 0 || !FuzzTargets.All.TryGetValue(args[0], out var target))
{
    Console.Error.WriteLine($"usage: KaDeploy.Fuzz {{{string.Join('|', FuzzTargets.All.Keys)}}} [FILE...]");
    return 2;
}
if (args.Length > 1)
{
    // KD_FUZZ_REPEAT=N replays the inputs N times in one process, as AFL's long-lived child runs them.
    int repeat = int.TryParse(Environment.GetEnvironmentVariable("KD_FUZZ_REPEAT"), out int r) ? Math.Max(1, r) : 1;
    var inputs = args.Skip(1).Select(File.ReadAllBytes).ToList();
    for (int i = 0; i < repeat; i++)
        foreach (var input in inputs) target(input);
    Console.WriteLine($"{inputs.Count} input(s) replayed {repeat} time(s) without a failure");
    return 0;
}
Fuzzer.OutOfProcess.Run(stream =>
{
    using var ms = new MemoryStream();
    stream.CopyTo(ms);
    target(ms.ToArray());
});
return 0;
