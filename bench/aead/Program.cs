// Seals and opens 64 KiB frames (the data-frame size) with each candidate AEAD for about two
// seconds each and prints GB/s on one core. Run: dotnet run -c Release --project bench/aead
using System.Diagnostics;
using System.Security.Cryptography;
using NSec.Cryptography;

const int Frame = 64 * 1024 - 16;
var plain = RandomNumberGenerator.GetBytes(Frame);
var cipher = new byte[Frame + 16];
var back = new byte[Frame];
var aad = new byte[16];
var nonce12 = new byte[12];
var key = RandomNumberGenerator.GetBytes(32);
Console.WriteLine($"CPU: {File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name"))?.Split(':')[1].Trim()}; {Environment.ProcessorCount} cores; frame {Frame} bytes");

using (var gcm = new AesGcm(key, 16))
    Measure("AES-256-GCM (System.Security.Cryptography)",
        () => gcm.Encrypt(nonce12, plain, cipher.AsSpan(0, Frame), cipher.AsSpan(Frame), aad),
        () => gcm.Decrypt(nonce12, cipher.AsSpan(0, Frame), cipher.AsSpan(Frame), back, aad));
if (System.Security.Cryptography.ChaCha20Poly1305.IsSupported)
    using (var cc = new System.Security.Cryptography.ChaCha20Poly1305(key))
        Measure("ChaCha20-Poly1305 (System.Security.Cryptography)",
            () => cc.Encrypt(nonce12, plain, cipher.AsSpan(0, Frame), cipher.AsSpan(Frame), aad),
            () => cc.Decrypt(nonce12, cipher.AsSpan(0, Frame), cipher.AsSpan(Frame), back, aad));

foreach (AeadAlgorithm alg in new AeadAlgorithm[] { AeadAlgorithm.Aes256Gcm, AeadAlgorithm.ChaCha20Poly1305, AeadAlgorithm.Aegis128L, AeadAlgorithm.Aegis256 })
{
    bool supported;
    try { supported = alg is not Aes256Gcm || Aes256Gcm.IsSupported; }
    catch (Exception e) { Console.WriteLine($"NSec {alg.GetType().Name}: unavailable ({e.GetType().Name}: {e.Message})"); continue; }
    if (!supported) { Console.WriteLine($"NSec {alg.GetType().Name}: not supported on this CPU"); continue; }
    using var k = NSec.Cryptography.Key.Import(alg, key.AsSpan(0, alg.KeySize), KeyBlobFormat.RawSymmetricKey);
    var nonce = new byte[alg.NonceSize];
    var ct = new byte[Frame + alg.TagSize];
    Measure($"{alg.GetType().Name} (NSec/libsodium)",
        () => alg.Encrypt(k, nonce, aad, plain, ct),
        () => { if (!alg.Decrypt(k, nonce, aad, ct, back)) throw new InvalidOperationException(); });
}

static void Measure(string name, Action seal, Action open)
{
    for (int i = 0; i < 200; i++) { seal(); open(); }
    double s = Rate(seal), o = Rate(open);
    Console.WriteLine($"{name,-52} seal {s,5:F2} GB/s  open {o,5:F2} GB/s");
}

static double Rate(Action a)
{
    var sw = Stopwatch.StartNew();
    long n = 0;
    double cpu0 = Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;
    while (sw.Elapsed.TotalSeconds < 2) { a(); n++; }
    double cpu = Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds - cpu0;
    return n * (double)Frame / cpu / 1e9; // per CPU-second: the machine is shared, wall time lies
}
