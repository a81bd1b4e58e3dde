using System.Security.Cryptography;
using KaDeploy.Payloads;
using KaDeploy.Payloads.Parts;
using KaDeploy.Protocol;

namespace KaDeploy.Tests.Payloads.Parts;

public class PartsFormatTests
{
    private static async Task<byte[]> ContainerAsync(params (PartKind Kind, string Name, byte[] Bytes)[] parts)
    {
        var ms = new MemoryStream();
        await using var w = new PartsWriter(ms, chunkBytes: 1000);
        foreach (var p in parts) await w.WritePartAsync(p.Kind, p.Name, p.Bytes, CancellationToken.None);
        await w.FinishAsync(CancellationToken.None);
        return ms.ToArray();
    }

    private static async Task<List<(PartHeader Header, byte[] Bytes)>> ReadAllAsync(byte[] container, int readSize = 333)
    {
        var r = new PartsReader(new MemoryStream(container));
        var result = new List<(PartHeader, byte[])>();
        while (await r.NextPartAsync(CancellationToken.None) is { } part)
        {
            var ms = new MemoryStream();
            var buf = new byte[readSize];
            int n;
            while ((n = await part.Content.ReadAsync(buf)) > 0) ms.Write(buf, 0, n);
            result.Add((part.Header, ms.ToArray()));
        }
        return result;
    }

    [Fact]
    public async Task Parts_round_trip_with_their_kinds_names_and_bytes_across_chunk_boundaries()
    {
        var big = RandomNumberGenerator.GetBytes(5000);   // 5 chunks of 1000 bytes
        var c = await ContainerAsync((PartKind.Manifest, "manifest", "{}"u8.ToArray()), (PartKind.Tree, "/", big),
            (PartKind.Tree, "/boot", []), (PartKind.BlockMap, "partition 3", [1, 2, 3]));
        var parts = await ReadAllAsync(c);
        Assert.Equal(4, parts.Count);
        Assert.Equal(new[] { "manifest", "/", "/boot", "partition 3" }, parts.Select(p => p.Header.Name));
        Assert.Equal(new[] { PartKind.Manifest, PartKind.Tree, PartKind.Tree, PartKind.BlockMap }, parts.Select(p => p.Header.Kind));
        Assert.Equal(big, parts[1].Bytes);
        Assert.Empty(parts[2].Bytes);
        Assert.Equal(new byte[] { 1, 2, 3 }, parts[3].Bytes);
    }

    [Theory]
    [InlineData(DigestAlgorithm.XxHash128, "XXH3-128")]
    [InlineData(DigestAlgorithm.Blake3, "BLAKE3")]
    public async Task A_container_names_the_sessions_digest_and_every_part_is_checked_with_it(DigestAlgorithm algorithm, string name)
    {
        var big = RandomNumberGenerator.GetBytes(5000);
        var ms = new MemoryStream();
        await using (var w = new PartsWriter(ms, chunkBytes: 1000, digest: algorithm))
        {
            await w.WritePartAsync(PartKind.Tree, "/", big, CancellationToken.None);
            await w.WritePartAsync(PartKind.Tree, "/boot", new byte[] { 7 }, CancellationToken.None);
            await w.FinishAsync(CancellationToken.None);
            Assert.Equal(KaDeploy.Relay.PayloadDigest.Of(algorithm, big), w.Finished[0].Digest);
        }
        var c = ms.ToArray();
        Assert.Equal([.. "KAPARTS\x02"u8, (byte)algorithm], c[..9]);
        var parts = await ReadAllAsync(c);
        Assert.Equal(big, parts[0].Bytes);

        var flipped = (byte[])c.Clone();
        flipped[9 + 3 + 1 + 4 + 10] ^= 0x01;   // a byte of part 0's first chunk
        var e = await Assert.ThrowsAsync<KaDeployException>(() => ReadAllAsync(flipped));
        Assert.Contains($"part 0 (Tree '/'): {name} mismatch", e.Message);

        var unknown = (byte[])c.Clone();
        unknown[8] = 9;
        Assert.Contains("unknown digest algorithm 9", (await Assert.ThrowsAsync<KaDeployException>(() => ReadAllAsync(unknown))).Message);
    }

    [Fact]
    public async Task Chunking_does_not_depend_on_how_the_producer_writes_sync_or_async()
    {
        var data = RandomNumberGenerator.GetBytes(7777);
        async Task<byte[]> WithAsync(int[] sizes, bool sync)
        {
            var ms = new MemoryStream();
            await using var w = new PartsWriter(ms, chunkBytes: 1000);
            var s = await w.BeginPartAsync(PartKind.Tree, "/", CancellationToken.None);
            int at = 0;
            for (int i = 0; at < data.Length; i++)
            {
                int n = Math.Min(sizes[i % sizes.Length], data.Length - at);
                if (sync) s.Write(data, at, n);
                else await s.WriteAsync(data.AsMemory(at, n));
                at += n;
            }
            await w.EndPartAsync(CancellationToken.None);
            await w.FinishAsync(CancellationToken.None);
            return ms.ToArray();
        }
        // Whole chunks straight from the producer's buffer, partial ones gathered: the same container either way.
        var reference = await WithAsync([1], sync: false);
        foreach (var sizes in new[] { new[] { 7777 }, [1500], [999, 1, 2000, 3], [1000] })
        {
            Assert.Equal(reference, await WithAsync(sizes, sync: true));
            Assert.Equal(reference, await WithAsync(sizes, sync: false));
        }
        Assert.Equal(data, (await ReadAllAsync(reference))[0].Bytes);
    }

    [Fact]
    public async Task A_part_left_unread_is_still_verified_when_the_next_part_is_asked_for()
    {
        var c = await ContainerAsync((PartKind.Tree, "/", RandomNumberGenerator.GetBytes(3000)), (PartKind.Tree, "/home", [9]));
        c[8 + 3 + 1 + 4 + 10] ^= 0x40;   // a byte inside part 0's first chunk
        var r = new PartsReader(new MemoryStream(c));
        var first = await r.NextPartAsync(CancellationToken.None);
        Assert.NotNull(first);
        var e = await Assert.ThrowsAsync<KaDeployException>(() => r.NextPartAsync(CancellationToken.None));
        Assert.Contains("part 0 (Tree '/'): SHA-256 mismatch", e.Message);
    }

    [Fact]
    public async Task Every_flipped_byte_and_every_truncation_is_an_error_naming_where()
    {
        var c = await ContainerAsync((PartKind.Manifest, "manifest", "{\"a\":1}"u8.ToArray()), (PartKind.Tree, "/", RandomNumberGenerator.GetBytes(1500)));
        var good = await ReadAllAsync(c);
        Assert.Equal(2, good.Count);
        for (int i = 0; i < c.Length; i++)
        {
            var bad = (byte[])c.Clone();
            bad[i] ^= 0x01;
            // A flipped bit anywhere is caught: magic, kind, name length, name, chunk length, data, digest or end marker.
            await Assert.ThrowsAnyAsync<Exception>(async () =>
            {
                var parts = await ReadAllAsync(bad);
                // A flip in a kind or a name that stays valid is not the stream's to catch (the manifest lists every
                // part, and the installer compares); the reader must then report the changed header, never the old one.
                if (parts.Select(p => p.Header).SequenceEqual(good.Select(p => p.Header))) return;
                throw new KaDeployException("header changed");
            });
        }
        for (int len = 0; len < c.Length; len++)
        {
            var cut = c.AsSpan(0, len).ToArray();
            var e = await Assert.ThrowsAsync<KaDeployException>(() => ReadAllAsync(cut));
            Assert.DoesNotContain('\n', e.Message);
        }
    }

    [Fact]
    public async Task Synchronous_writes_and_reads_make_and_check_the_same_container()
    {
        var big = RandomNumberGenerator.GetBytes(4321);
        var asyncMade = await ContainerAsync((PartKind.Tree, "/", big));
        var ms = new MemoryStream();
        await using (var w = new PartsWriter(ms, chunkBytes: 1000))
        {
            var part = await w.BeginPartAsync(PartKind.Tree, "/", CancellationToken.None);
            for (int i = 0; i < big.Length; i += 77) part.Write(big.AsSpan(i, Math.Min(77, big.Length - i)));
            await w.EndPartAsync(CancellationToken.None);
            await w.FinishAsync(CancellationToken.None);
        }
        Assert.Equal(asyncMade, ms.ToArray());

        var r = new PartsReader(new MemoryStream(asyncMade));
        var p = (await r.NextPartAsync(CancellationToken.None))!.Value;
        var back = new MemoryStream();
        var buf = new byte[333];
        int n;
        while ((n = p.Content.Read(buf.AsSpan())) > 0) back.Write(buf, 0, n);
        Assert.Equal(big, back.ToArray());
        Assert.Null(await r.NextPartAsync(CancellationToken.None));

        asyncMade[20] ^= 1;   // inside the data: the synchronous path checks the digest too
        r = new PartsReader(new MemoryStream(asyncMade));
        p = (await r.NextPartAsync(CancellationToken.None))!.Value;
        Assert.Contains("SHA-256 mismatch", Assert.Throws<KaDeployException>(() => { while (p.Content.Read(buf.AsSpan()) > 0) { } }).Message);
    }

    [Fact]
    public async Task Oversized_chunks_names_and_unknown_kinds_are_refused()
    {
        var c = await ContainerAsync((PartKind.Tree, "/", [1, 2, 3]));
        var chunk = (byte[])c.Clone();
        int chunkAt = 8 + 3 + 1;
        BitConverter.GetBytes((uint)PartsFormat.MaxChunk + 1).CopyTo(chunk, chunkAt);
        Assert.Contains("limit", (await Assert.ThrowsAsync<KaDeployException>(() => ReadAllAsync(chunk))).Message);

        var kind = (byte[])c.Clone();
        kind[8] = 9;
        Assert.Contains("unknown part kind 9", (await Assert.ThrowsAsync<KaDeployException>(() => ReadAllAsync(kind))).Message);

        var name = (byte[])c.Clone();
        BitConverter.GetBytes((ushort)(PartsFormat.MaxNameBytes + 1)).CopyTo(name, 9);
        Assert.Contains("name of", (await Assert.ThrowsAsync<KaDeployException>(() => ReadAllAsync(name))).Message);

        var magic = (byte[])c.Clone();
        magic[0] = (byte)'X';
        Assert.Contains("bad magic", (await Assert.ThrowsAsync<KaDeployException>(() => ReadAllAsync(magic))).Message);
    }

    [Fact]
    public async Task Multi_part_source_writes_each_source_as_one_part_and_reports_them()
    {
        var events = new List<PartEvent>();
        var src = new MultiPartSource(
        [
            new PartSource(PartKind.Manifest, "manifest", new BufferSource("{}"u8.ToArray(), "m")),
            new PartSource(PartKind.Raw, "blob", new BufferSource(new byte[300_000], "b")),
        ], events.Add);
        Assert.Equal(PayloadKind.Parts, src.Kind);
        Assert.Equal(300_002, src.EstimatedLength);
        var ms = new MemoryStream();
        await src.WriteToAsync(ms, CancellationToken.None);
        var parts = await ReadAllAsync(ms.ToArray(), 70_000);
        Assert.Equal(300_000, parts[1].Bytes.Length);
        Assert.Equal(4, events.Count);
        Assert.True(events[3].Finished);
        Assert.Equal(300_000, events[3].Bytes);
        Assert.Equal("blob", events[3].Header.Name);
        // Framing overhead: magic, headers, 4 bytes per 256 KiB chunk, terminators, digests, end marker.
        Assert.True(ms.Length - 300_002 < 200, $"overhead {ms.Length - 300_002}");
    }
}
