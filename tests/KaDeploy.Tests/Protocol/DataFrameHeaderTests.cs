using System.Buffers.Binary;
using KaDeploy.Protocol;

namespace KaDeploy.Tests.Protocol;

/// <summary>
/// Every check of <see cref="DataFrameHeader.Read"/>, at its boundary: the largest accepted value passes and
/// the next one is refused (written against the mutants Stryker left alive in <c>Protocol/</c>).
/// </summary>
public class DataFrameHeaderTests
{
    private static byte[] Bytes(DataFrameHeader h)
    {
        var buf = new byte[DataFrameHeader.Size];
        h.Write(buf);
        return buf;
    }

    private static string Refused(byte[] header) => Assert.Throws<ProtocolException>(() => DataFrameHeader.Read(header)).Message;

    [Fact]
    public void TheHeaderLayoutIsTheDocumentedOne()
    {
        // u32 magic 'KDDF' | u8 type | u8 version | u8 flags | u8 reserved | u32 length | u64 offset | u64 check | u32 reserved
        byte[] b = Bytes(new DataFrameHeader(DataFrameType.End, DataFrameHeader.EndPayloadSize + 16, 0x0102030405060708, 0x1112131415161718,
            DataFrameFlags.Sealed));
        Assert.Equal("KDDF"u8.ToArray(), b[..4]);
        Assert.Equal([(byte)DataFrameType.End, (byte)ProtocolConstants.Version, (byte)DataFrameFlags.Sealed, 0], b[4..8]);
        Assert.Equal(DataFrameHeader.EndPayloadSize + 16, BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(8)));
        Assert.Equal(0x0102030405060708, BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(12)));
        Assert.Equal(0x1112131415161718UL, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(20)));
        Assert.Equal([0, 0, 0, 0], b[28..]);
    }

    [Fact]
    public void AReservedByteLeftDirtyIsOverwrittenWithZero()
    {
        var buf = Enumerable.Repeat((byte)0xEE, DataFrameHeader.Size).ToArray();
        new DataFrameHeader(DataFrameType.Data, 1, 0, 0).Write(buf);
        Assert.Equal(0, buf[7]);
        Assert.Equal([0, 0, 0, 0], buf[28..]);
    }

    [Fact]
    public void EveryFieldRoundTrips()
    {
        DataFrameHeader[] samples =
        [
            new(DataFrameType.Data, ProtocolConstants.MaxChunkPayload, long.MaxValue - ProtocolConstants.MaxChunkPayload, ulong.MaxValue),
            new(DataFrameType.Data, 0, 0, 0),
            new(DataFrameType.Data, DataFrameHeader.TagSize, 1 << 20, 5, DataFrameFlags.Sealed),
            new(DataFrameType.End, DataFrameHeader.EndPayloadSize, 12345, 678),
            new(DataFrameType.End, DataFrameHeader.EndPayloadSize + DataFrameHeader.TagSize, 12345, 0, DataFrameFlags.Sealed),
            new(DataFrameType.Abort, 4096, 7, 8),
        ];
        foreach (DataFrameHeader h in samples) Assert.Equal(h, DataFrameHeader.Read(Bytes(h)));
    }

    [Fact]
    public void AnotherProtocolVersionIsRefused()
    {
        foreach (int delta in new[] { -1, 1 })
        {
            byte[] b = Bytes(new DataFrameHeader(DataFrameType.Data, 10, 0, 0));
            b[5] = (byte)(ProtocolConstants.Version + delta);
            Assert.Equal($"data frame version {b[5]}, expected {ProtocolConstants.Version}", Refused(b));
        }
    }

    [Theory]
    [InlineData(0x02)] // AEGIS-256 without Sealed
    [InlineData(0x80)]
    [InlineData(0x09)] // Sealed plus an unknown bit
    [InlineData(0x0B)] // Sealed, AEGIS-256 and an unknown bit
    [InlineData(0x07)] // Sealed with two ciphers at once
    [InlineData(0x04)] // AEGIS-128L without Sealed
    public void UnknownFlagsAreRefused(byte flags)
    {
        byte[] b = Bytes(new DataFrameHeader(DataFrameType.Data, 100, 0, 0));
        b[6] = flags;
        Assert.Equal($"data frame with unknown flags 0x{flags:x2}", Refused(b));
    }

    [Fact]
    public void EachTypeHasItsOwnLengthLimit()
    {
        Assert.Equal(
            $"Data frame of {ProtocolConstants.MaxChunkPayload + 1} bytes exceeds the limit of {ProtocolConstants.MaxChunkPayload}",
            Refused(Bytes(new DataFrameHeader(DataFrameType.Data, ProtocolConstants.MaxChunkPayload + 1, 0, 0))));
        Assert.Equal("Abort frame of 4097 bytes exceeds the limit of 4096",
            Refused(Bytes(new DataFrameHeader(DataFrameType.Abort, 4097, 0, 0))));
        Assert.Equal($"End frame of {DataFrameHeader.EndPayloadSize + 1} bytes exceeds the limit of {DataFrameHeader.EndPayloadSize}",
            Refused(Bytes(new DataFrameHeader(DataFrameType.End, DataFrameHeader.EndPayloadSize + 1, 0, 0))));
        Assert.Equal($"End frame of {DataFrameHeader.EndPayloadSize + 17} bytes exceeds the limit of {DataFrameHeader.EndPayloadSize + 16}",
            Refused(Bytes(new DataFrameHeader(DataFrameType.End, DataFrameHeader.EndPayloadSize + 17, 0, 0, DataFrameFlags.Sealed))));
        Assert.Equal("Data frame of -1 bytes exceeds the limit of 65536",
            Refused(Bytes(new DataFrameHeader(DataFrameType.Data, -1, 0, 0))));
    }

    [Fact]
    public void AnEndFrameHasExactlyItsPayloadSize()
    {
        Assert.Equal($"End frame of {DataFrameHeader.EndPayloadSize - 1} bytes, expected {DataFrameHeader.EndPayloadSize}",
            Refused(Bytes(new DataFrameHeader(DataFrameType.End, DataFrameHeader.EndPayloadSize - 1, 0, 0))));
        Assert.Equal($"End frame of {DataFrameHeader.EndPayloadSize} bytes, expected {DataFrameHeader.EndPayloadSize + 16}",
            Refused(Bytes(new DataFrameHeader(DataFrameType.End, DataFrameHeader.EndPayloadSize, 0, 0, DataFrameFlags.Sealed))));
    }

    [Fact]
    public void ASealedFrameShorterThanItsTagIsRefused()
    {
        Assert.Equal("sealed Data frame of 15 bytes is shorter than its tag",
            Refused(Bytes(new DataFrameHeader(DataFrameType.Data, DataFrameHeader.TagSize - 1, 0, 0, DataFrameFlags.Sealed))));
        Assert.Equal("sealed Abort frame of 0 bytes is shorter than its tag",
            Refused(Bytes(new DataFrameHeader(DataFrameType.Abort, 0, 0, 0, DataFrameFlags.Sealed))));
    }

    [Fact]
    public void AnOffsetNoStreamCanReachIsRefused()
    {
        long last = long.MaxValue - ProtocolConstants.MaxChunkPayload;
        Assert.Equal(last, DataFrameHeader.Read(Bytes(new DataFrameHeader(DataFrameType.Data, 1, last, 0))).Offset);
        Assert.Equal($"Data frame at offset {last + 1} beyond any stream",
            Refused(Bytes(new DataFrameHeader(DataFrameType.Data, 1, last + 1, 0))));
        Assert.Equal("End frame at negative offset -1",
            Refused(Bytes(new DataFrameHeader(DataFrameType.End, DataFrameHeader.EndPayloadSize, -1, 0))));
    }

    [Fact]
    public void SealedFramesCountTheirTagInThePayloadButNotInThePlaintext()
    {
        var sealedFrame = new DataFrameHeader(DataFrameType.Data, 1000, 0, 0, DataFrameFlags.Sealed);
        Assert.True(sealedFrame.IsSealed);
        Assert.Equal(1000 - DataFrameHeader.TagSize, sealedFrame.PlaintextLength);
        var clear = new DataFrameHeader(DataFrameType.Data, 1000, 0, 0);
        Assert.False(clear.IsSealed);
        Assert.Equal(1000, clear.PlaintextLength);
        Assert.Equal(ProtocolConstants.MaxChunkPayload - DataFrameHeader.TagSize, DataFrameHeader.MaxSealedChunk);
    }

    [Fact]
    public void AegisFramesCarryA32ByteTag()
    {
        var aegis = DataFrameHeader.Read(Bytes(new DataFrameHeader(DataFrameType.Data, 1000, 0, 0, DataFrameFlags.Sealed | DataFrameFlags.Aegis256)));
        Assert.Equal(1000 - DataFrameHeader.AegisTagSize, aegis.PlaintextLength);
        Assert.Equal(DataFrameHeader.EndPayloadSize + 32,
            DataFrameHeader.Read(Bytes(new DataFrameHeader(DataFrameType.End, DataFrameHeader.EndPayloadSize + 32, 0, 0, DataFrameFlags.Sealed | DataFrameFlags.Aegis256))).PayloadLength);
        Assert.Equal($"End frame of {DataFrameHeader.EndPayloadSize + 16} bytes, expected {DataFrameHeader.EndPayloadSize + 32}",
            Refused(Bytes(new DataFrameHeader(DataFrameType.End, DataFrameHeader.EndPayloadSize + 16, 0, 0, DataFrameFlags.Sealed | DataFrameFlags.Aegis256))));
    }

    [Fact]
    public void TheChecksumIsXxHash3OfThePayloadSeededWithTheOffset()
    {
        byte[] data = "some payload"u8.ToArray();
        Assert.Equal(System.IO.Hashing.XxHash3.HashToUInt64(data, 77), DataFrameHeader.ComputeChecksum(data, 77));
        Assert.NotEqual(DataFrameHeader.ComputeChecksum(data, 0), DataFrameHeader.ComputeChecksum(data, 1));
    }
}
