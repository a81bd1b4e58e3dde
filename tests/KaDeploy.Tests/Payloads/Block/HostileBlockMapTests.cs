using System.Buffers.Binary;
using KaDeploy.Payloads.Block;

namespace KaDeploy.Tests.Payloads.Block;

/// <summary>Malformed and hostile block maps: each is refused with a one-line reason and nothing lands outside [0, total).</summary>
public class HostileBlockMapTests
{
    private const long Total = 1024 * 1024;
    private const int BlockSize = 4096;

    private sealed class Builder
    {
        private readonly MemoryStream _stream = new();

        public Builder Header(string magic = "KDBLKMAP", ushort version = 1, uint blockSize = BlockSize, ulong total = Total)
        {
            Span<byte> h = stackalloc byte[24];
            System.Text.Encoding.ASCII.GetBytes(magic).CopyTo(h);
            BinaryPrimitives.WriteUInt16LittleEndian(h[8..], version);
            BinaryPrimitives.WriteUInt32LittleEndian(h[12..], blockSize);
            BinaryPrimitives.WriteUInt64LittleEndian(h[16..], total);
            _stream.Write(h);
            return this;
        }

        public Builder Data(ulong offset, uint length, int actualBytes = -1)
        {
            Span<byte> h = stackalloc byte[13];
            h[0] = (byte)'D';
            BinaryPrimitives.WriteUInt64LittleEndian(h[1..], offset);
            BinaryPrimitives.WriteUInt32LittleEndian(h[9..], length);
            _stream.Write(h);
            byte[] payload = new byte[actualBytes < 0 ? length : actualBytes];
            Array.Fill(payload, (byte)0xEE);
            _stream.Write(payload);
            return this;
        }

        public Builder End(ulong total = Total, ulong dataBytes = 0)
        {
            Span<byte> h = stackalloc byte[17];
            h[0] = (byte)'E';
            BinaryPrimitives.WriteUInt64LittleEndian(h[1..], total);
            BinaryPrimitives.WriteUInt64LittleEndian(h[9..], dataBytes);
            _stream.Write(h);
            return this;
        }

        public Builder Bytes(params byte[] bytes)
        {
            _stream.Write(bytes);
            return this;
        }

        public MemoryStream Build() => new(_stream.ToArray());
    }

    public static TheoryData<string, string> Cases => new()
    {
        { "bad magic", "bad magic" },
        { "bad version", "version 7" },
        { "bad block size", "block size 1000" },
        { "truncated header", "truncated" },
        { "overlapping runs", "overlaps" },
        { "offset beyond total", "beyond the image's end" },
        { "offset wraps around", "beyond the image's end" },
        { "huge record length", "length 4294967295" },
        { "zero record length", "length 0" },
        { "unaligned run", "not aligned" },
        { "truncated data", "stream ends inside the record" },
        { "truncated before end", "truncated" },
        { "end total mismatch", "end record says total" },
        { "end count mismatch", "data bytes" },
        { "unknown record type", "unknown record type 0x58" },
    };

    private static MemoryStream Stream(string name) => name switch
    {
        "bad magic" => new Builder().Header(magic: "NOTAMAP!").End().Build(),
        "bad version" => new Builder().Header(version: 7).End().Build(),
        "bad block size" => new Builder().Header(blockSize: 1000).End().Build(),
        "truncated header" => new MemoryStream("KDBLKMAP"u8.ToArray()),
        "overlapping runs" => new Builder().Header().Data(0, 8192).Data(4096, 4096).End(dataBytes: 12288).Build(),
        "offset beyond total" => new Builder().Header().Data((ulong)Total, 4096).End(dataBytes: 4096).Build(),
        "offset wraps around" => new Builder().Header().Data(ulong.MaxValue - 4095, 4096).End(dataBytes: 4096).Build(),
        "huge record length" => new Builder().Header().Data(0, uint.MaxValue, actualBytes: 10).Build(),
        "zero record length" => new Builder().Header().Data(0, 0).End().Build(),
        "unaligned run" => new Builder().Header().Data(100, 4096).End(dataBytes: 4096).Build(),
        "truncated data" => new Builder().Header().Data(0, 8192, actualBytes: 5000).Build(),
        "truncated before end" => new Builder().Header().Data(0, 4096).Build(),
        "end total mismatch" => new Builder().Header().End(total: Total * 2).Build(),
        "end count mismatch" => new Builder().Header().Data(0, 4096).End(dataBytes: 1).Build(),
        "unknown record type" => new Builder().Header().Bytes((byte)'X').Build(),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task IsRefusedWithAReasonAndNothingOutOfRange(string name, string expected)
    {
        using var dir = new TempDirectory();
        string target = dir.File("target.img");
        using var cts = PayloadTestKit.SafetyTimeout();

        var e = await Assert.ThrowsAsync<KaDeployException>(() => new BlockDeviceSink(target).ConsumeAsync(Stream(name), cts.Token));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        if (File.Exists(target))
        {
            // The target never grows past the image's declared length, and only the first (valid) record's
            // bytes may have been written.
            Assert.True(new FileInfo(target).Length <= Total, $"target grew to {new FileInfo(target).Length}");
            byte[] content = File.ReadAllBytes(target);
            int written = Array.FindLastIndex(content, b => b != 0) + 1;
            Assert.True(written <= 8192, $"bytes written up to {written}");
        }
    }

    [Fact]
    public async Task ValidStreamBuiltByHandIsAccepted()
    {
        using var dir = new TempDirectory();
        string target = dir.File("target.img");
        MemoryStream stream = new Builder().Header().Data(0, 4096).Data(4096, 4096).Data((ulong)Total - 4096, 4096).End(dataBytes: 12288).Build();
        await new BlockDeviceSink(target).ConsumeAsync(stream, CancellationToken.None);
        byte[] content = File.ReadAllBytes(target);
        Assert.Equal(Total, content.Length);
        Assert.All(content.AsSpan(0, 8192).ToArray(), b => Assert.Equal(0xEE, b));
        Assert.All(content.AsSpan(8192, (int)Total - 12288).ToArray(), b => Assert.Equal(0, b));
    }

    [Fact]
    public async Task RandomlyDamagedStreamsFailOnlyWithAReasonAndStayInRange()
    {
        // A valid map of a 256 KiB image with three runs, then many damaged copies: flipped bytes, cuts, both.
        var valid = new MemoryStream();
        var writer = new BlockMapWriter(valid, 256 * 1024, 4096);
        await writer.WriteHeaderAsync(CancellationToken.None);
        await writer.WriteRunAsync(0, PayloadTestKit.RandomBytes(8192, 51), CancellationToken.None);
        await writer.WriteRunAsync(65536, PayloadTestKit.RandomBytes(4096, 52), CancellationToken.None);
        await writer.WriteRunAsync(200 * 1024, PayloadTestKit.RandomBytes(56 * 1024, 53), CancellationToken.None);
        await writer.WriteEndAsync(CancellationToken.None);
        byte[] original = valid.ToArray();

        using var dir = new TempDirectory();
        string target = dir.File("target.img");
        var random = new Random(54);
        int refused = 0;
        for (int i = 0; i < 300; i++)
        {
            byte[] damaged = original.ToArray();
            int flips = random.Next(0, 4);
            for (int f = 0; f < flips; f++)
            {
                // Mostly the header and record headers, where damage is interesting.
                int at = random.Next(3) == 0 ? random.Next(damaged.Length) : random.Next(Math.Min(60, damaged.Length));
                damaged[at] = (byte)random.Next(256);
            }
            int length = random.Next(4) == 0 ? random.Next(damaged.Length) : damaged.Length;
            ulong declared = length >= 24 ? BinaryPrimitives.ReadUInt64LittleEndian(damaged.AsSpan(16)) : 0;

            try
            {
                await new BlockDeviceSink(target).ConsumeAsync(new MemoryStream(damaged, 0, length), CancellationToken.None);
            }
            catch (KaDeployException e)
            {
                Assert.DoesNotContain('\n', e.Message);
                refused++;
            }
            if (File.Exists(target))
            {
                Assert.True((ulong)new FileInfo(target).Length <= declared, $"case {i}: target grew past the declared total");
                File.Delete(target);
            }
        }
        Assert.True(refused > 150, $"only {refused} of 300 damaged streams were refused");
    }
}
