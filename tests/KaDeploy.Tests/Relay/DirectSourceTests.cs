using System.Security.Cryptography;
using KaDeploy.IO;
using KaDeploy.Payloads.Exec;
using KaDeploy.Protocol;
using KaDeploy.Relay;
using KaDeploy.Security;
using KaDeploy.Tests.Security;

namespace KaDeploy.Tests.Relay;

/// <summary>
/// The server's exec source reads its command's output straight into the ring's slots (<see cref="ISegmentWriter"/>),
/// digested as it is committed. The frames must be those of the copying path: every Data frame full but the last, the
/// payload intact, the End digest that of the payload.
/// </summary>
public class DirectSourceTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ACommandsOutputReadIntoTheSlotsMakesTheSameFramesAndDigest(bool keyed)
    {
        var data = RandomNumberGenerator.GetBytes(1024 * 1024 + 12345); // 17 frames: SealedDataFrameTests.Receive holds them all in its ring
        string file = Path.Combine(Path.GetTempPath(), $"ka-direct-{Guid.NewGuid():N}");
        await File.WriteAllBytesAsync(file, data);
        try
        {
            using var cipher = keyed ? new StreamCipher(RandomNumberGenerator.GetBytes(StreamCipher.KeySize), 7) : null;
            using var ring = new RelayRing(128 * RelayRing.SlotSize, sealedFrames: keyed);
            using var cursor = ring.Attach("test");
            var writer = new RingWriterStream(ring, default, cipher);
            using var digest = new DigestWriteStream(writer, DigestAlgorithm.XxHash128);
            Assert.True(digest.LendsSegments);
            await new CommandSource($"cat '{file}'").WriteToAsync(digest, default);
            await writer.CompleteAsync(digest.Length64, DigestAlgorithm.XxHash128, digest.Digest(), default);

            var frames = new List<byte[]>();
            var sizes = new List<int>();
            while (true)
            {
                var f = cursor.Next(default);
                frames.Add(f.Bytes.ToArray());
                if (f.Header.Type == DataFrameType.Data) sizes.Add(f.Header.PlaintextLength);
                cursor.Advance();
                if (f.Header.Type == DataFrameType.End) break;
            }
            int chunk = keyed ? DataFrameHeader.MaxSealedChunk : ProtocolConstants.MaxChunkPayload;
            Assert.All(sizes[..^1], s => Assert.Equal(chunk, s));
            var (published, error, end) = SealedDataFrameTests.Receive(frames, cipher);
            Assert.Null(error);
            Assert.Equal(data, published);
            Assert.Equal(data.Length, end!.PayloadLength);
            Assert.Equal(PayloadDigest.Of(DigestAlgorithm.XxHash128, data), end.Digest);
        }
        finally
        {
            File.Delete(file);
        }
    }
}
