using System.Security.Cryptography;
using KaDeploy.Protocol;
using KaDeploy.Payloads.Image;
using KaDeploy.Relay;
using KaDeploy.Reporting;
using KaDeploy.Topology;
using ZstdSharp;
using ZstdSharp.Unsafe;

namespace KaDeploy.Session;

public sealed partial class DeployServer
{
    private async Task RunSessionAsync(ServerNode[] nodes, SessionReport report, Task<long>? estimate, CancellationToken ct)
    {
        if (nodes.Length == 0) throw new KaDeployException("no client registered");
        var endpoints = nodes.Select(n => new NodeEndpoint(n.Id, n.Report.Name, n.Address, n.DataPort)).ToArray();
        var ordered = _options.NodeOrder is { } order ? TreePlanner.OrderByList(endpoints, order) : TreePlanner.OrderByAddress(endpoints);
        var placements = TreePlanner.Plan(ordered, _options.Arity);
        var byId = nodes.ToDictionary(n => n.Id);
        AssignPlaces(placements, byId, _options.Arity);
        var key = RandomNumberGenerator.GetBytes(16);
        // Keyed: every frame is sealed once, here, under a stream key made for this session; it reaches the
        // nodes only inside their sealed Plans.
        var (streamKey, streamId) = _options.Key is null ? (null, 0u) : Security.StreamCipher.NewStream();
        using var cipher = streamKey is null ? null : new Security.StreamCipher(streamKey, streamId, _cipher);

        // A source the server can read again is its own spool: an index, no retention. Else the memory spool is the ring's
        // retention: the produced frames stay where they are, nothing is copied.
        bool memorySpool = !_options.NoSpool && _options.SpoolDirectory is null;
        var reread = memorySpool && _options.SpoolRereadsSource ? RereadableSource() : null;
        if (reread is not null) memorySpool = false;
        using var ring = new RelayRing(_options.BufferBytes, memorySpool ? _options.SpoolMemoryBytes : 0, sealedFrames: cipher is not null);
        using var spool = _options.NoSpool ? null
            : reread is { } r ? StreamSpool.FromSource(r.Path, r.Layout, streamKey is null ? null : () => new Security.StreamCipher(streamKey, streamId, _cipher))
            : memorySpool ? StreamSpool.InRing(ring) : new StreamSpool(_options.SpoolDirectory!);
        // A file spool is attached before the first frame: nothing leaves the ring before it is spooled.
        var spoolCursor = spool is { NeedsFeed: true } ? ring.Attach("spool") : null;
        using var dataCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var spooling = spoolCursor is null ? Task.CompletedTask : Task.Run(() => spool!.RunAsync(spoolCursor, dataCts.Token), CancellationToken.None);
        var links = new ChildLinks(_dataListener, _handshake, _options.Session, ring, key,
            placements.Where(p => p.ParentId == TreePlanner.ServerId).Select(p => p.Node.NodeId),
            Log, (child, reason, hung) => { if (hung) ChildLinkLost(ServerSelf, child, reason); }, spool, SpoolGate, SpoolOnly, SpoolCannotServe);
        _links = links;
        var accepting = links.AcceptAsync(dataCts.Token);
        // One cleanup for every way out, from here on: a failure before the stream starts (no node linked, a cancel
        // while the plans go out) also stops the accept loop and the spool feed and ends any sender already started.
        Task watching = Task.CompletedTask;
        ProgressLine? progress = null;
        try
        {
            if (spool is not null) Log($"spool: {spool.Description}");
            Volatile.Write(ref _spoolKeeps, spool?.KeepsLastBytes ?? -1);

            // The tree's size estimate has been running while clients registered; give it a moment more at most.
            if (estimate is not null) await Task.WhenAny(estimate, Task.Delay(TimeSpan.FromSeconds(2), ct)).ConfigureAwait(false);
            long estimated = _options.Source.EstimatedLength ?? (estimate is { IsCompletedSuccessfully: true } ? estimate.Result : -1);
            lock (_gate)
                foreach (var p in placements) _nodes.SetParent(byId[p.Node.NodeId], p.ParentId);
            Interlocked.Exchange(ref _estimatedTotal, estimated);
            _ = estimate?.ContinueWith(t => Interlocked.CompareExchange(ref _estimatedTotal, t.Result, -1),
                CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
            foreach (var p in placements)
            {
                var node = byId[p.Node.NodeId];
                node.Report.ParentId = p.ParentId;
                node.Report.Depth = p.Depth;
                node.Report.State = NodeState.Planned;
                var parent = p.ParentId == TreePlanner.ServerId ? null : byId[p.ParentId];
                // An empty parent address means "the host you reached the server's control port on".
                var plan = new Plan(node.Id, p.ParentId, parent?.Address.ToString() ?? "", parent?.DataPort ?? DataPort,
                    [.. p.ChildIds], _options.Source.Kind, _options.Compression, estimated, key, _options.Digest, streamKey, streamId, _cipher);
                await node.TrySendAsync(plan, ct).ConfigureAwait(false);
            }

            await Task.WhenAny(Task.WhenAll(nodes.Select(n => n.Linked)), Task.Delay(_options.LinkTimeout, ct)).ConfigureAwait(false);
            ct.ThrowIfCancellationRequested();
            await FailUnlinkedAsync(nodes, placements, byId, ct).ConfigureAwait(false);
            if (nodes.All(n => n.IsFinished)) throw new KaDeployException("no node could link up");
            Log($"all links up ({(_options.Arity == 1 ? "chain" : $"tree of arity {_options.Arity}")}, depth {placements.Max(p => p.Depth)}); streaming");
            _phase = "streaming";

            var writer = new RingWriterStream(ring, ct, cipher) { Observer = spool?.Observer };
            watching = StallWatch.RunAsync(ring, _options.StallTimeout, Log, dataCts.Token);
            progress = _options.ProgressOnTerminal is { } terminal
                ? new ProgressLine("sent", () => (_producedDigest?.Length64 ?? writer.WireBytes,
                    estimated > 0 ? estimated : estimate is { IsCompletedSuccessfully: true } ? estimate.Result : null,
                    (SlowestProgress(nodes) is long slowest ? $" | slowest node {ProgressLine.Size(slowest)}" : "") + $" | {nodes.Count(n => n.IsFinished)}/{nodes.Length} done"), _options.Log, terminal)
                : null;
            var everyone = Task.WhenAll(nodes.Select(n => n.Finished));
            var producing = ProduceAsync(writer, ring, ct);
            if (await Task.WhenAny(producing, everyone).ConfigureAwait(false) != producing)
            {
                // Every node has its verdict (most likely: every node failed): reading the source on is waste.
                Log("no node left to serve: stopping the source");
                ring.Fault(new KaDeployException("no node left to serve"));
                try { await producing.ConfigureAwait(false); }
                catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested) { }
            }
            else
            {
                (report.PayloadBytes, report.Digest) = await producing.ConfigureAwait(false);
                report.DigestAlgorithm = _options.Digest.Name();
                if (_options.Digest == DigestAlgorithm.Sha256) report.Sha256 = report.Digest;
                _produced = true;
            }
            report.WireBytes = writer.WireBytes;
            await everyone.WaitAsync(ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            ring.Fault(e);
            throw;
        }
        finally
        {
            if (progress is not null) await progress.DisposeAsync().ConfigureAwait(false);
            await dataCts.CancelAsync().ConfigureAwait(false);
            await accepting.ConfigureAwait(false);
            await links.WhenSendersDoneAsync().ConfigureAwait(false);
            await watching.ConfigureAwait(false);
            await spooling.ConfigureAwait(false);
            _links = null;
        }

        foreach (var p in placements)
        {
            var node = byId[p.Node.NodeId];
            if (node.Gone) continue;
            await node.TrySendAsync(new Release(), ct).ConfigureAwait(false);
            if (_options.ReleaseDelay > TimeSpan.Zero) await Task.Delay(_options.ReleaseDelay, ct).ConfigureAwait(false);
        }
    }

    // The file (or device) the stream is made of, and how, when the server can read it again to serve a resume: an
    // uncompressed image or device, sent without compression. A pre-compressed image, a compressed stream, a command's
    // output or a tree keep the memory spool.
    private (string Path, SourceLayout Layout)? RereadableSource()
    {
        if (_options.Compression != WireCompression.None || _options.SourceIsZstd) return null;
        return _options.Source switch
        {
            ImageSource { RereadLayout: { } layout } image => (image.Path, layout),
            Payloads.Block.BlockDeviceSource device => (device.Path, SourceLayout.BlockMap),
            _ => null,
        };
    }

    // The spool could not make a node's frames again (its source changed since they were sent): the node fails with the
    // reason, it is told so (not left waiting for a parent), and its own children move on.
    private void SpoolCannotServe(int childId, string reason)
    {
        if (Find(childId) is not { } node || node.Gone) return;
        string why = $"cannot be served from the spool: {reason}";
        Log($"node {childId} {why}");
        node.Fail(why, Now);
        LeaveTree(node, why);
        _ = node.TrySendAsync(new Abort(why), CancellationToken.None);
    }

    // Stands for the server where a parent node is expected (its own child links).
    private static readonly ServerNode ServerSelf = new(0, "server", System.Net.IPAddress.None, 0, new NullConnection(), new ControlChannel(Stream.Null));

    private sealed class NullConnection : Transport.Connection
    {
        public override Stream Stream => Stream.Null;
        public override System.Net.IPEndPoint RemoteEndPoint { get; } = new(System.Net.IPAddress.None, 0);
        public override System.Net.IPEndPoint LocalEndPoint { get; } = new(System.Net.IPAddress.None, 0);
        public override void ShutdownSend() { }
        protected override void CloseTransport() { }
    }

    // Null once every node has finished: "slowest node 0 B" at the end said the opposite of what happened.
    private static long? SlowestProgress(ServerNode[] nodes)
    {
        long min = long.MaxValue;
        foreach (var n in nodes)
            if (!n.IsFinished) min = Math.Min(min, Volatile.Read(ref n.ProgressBytes));
        return min == long.MaxValue ? null : min;
    }

    // Source → digest → (zstd) → frames in the ring. The source runs on the pool: tar and
    // compressors write synchronously and block on the ring when the tree pushes back.
    private async Task<(long Length, string Digest)> ProduceAsync(RingWriterStream writer, RelayRing ring, CancellationToken ct)
    {
        if (_options.SourceIsZstd) return await ProducePreCompressedAsync(writer, ct).ConfigureAwait(false);
        CompressionStream? zstd = null;
        Stream top = writer;
        if (_options.Compression == WireCompression.Zstd)
        {
            zstd = new CompressionStream(writer, _options.CompressionLevel, 1 << 20, leaveOpen: true);
            zstd.SetParameter(ZSTD_cParameter.ZSTD_c_nbWorkers, Environment.ProcessorCount);
            top = zstd;
        }
        using var digest = new DigestWriteStream(top, _options.Digest);
        _producedDigest = digest;
        await Task.Run(() => _options.Source.WriteToAsync(digest, ct), ct).ConfigureAwait(false);
        if (zstd is not null) await Task.Run(zstd.Dispose, ct).ConfigureAwait(false); // writes the last zstd frame
        // The frames digest is the writer's own, folded as it sealed each frame: no pass of ours over the payload.
        return await EndStreamAsync(writer, digest.Length64, _options.Digest.IsContentDigest() ? digest.Digest() : null, "", ct).ConfigureAwait(false);
    }

    // The End frame (the payload's length, and its content digest if one is used), and the log line that says so.
    private async Task<(long Length, string Digest)> EndStreamAsync(RingWriterStream writer, long length, byte[]? contentDigest,
        string how, CancellationToken ct)
    {
        byte[] sum = await writer.CompleteAsync(length, _options.Digest, contentDigest, ct).ConfigureAwait(false);
        string hex = Hex(_options.Digest, sum);
        Log($"source done: {length} bytes{how}, {writer.WireBytes} on the wire{(_options.SourceIsZstd ? " (pre-compressed)" : "")}, {_options.Digest.Name()} {hex}");
        return (length, hex);
    }

    // The source's zstd frames go to the wire untouched; a side pipe decompresses them only to compute
    // the digest of the payload the clients will decompress and check.
    private async Task<(long Length, string Digest)> ProducePreCompressedAsync(RingWriterStream writer, CancellationToken ct)
    {
        // Under the frames digest the server never hashes the payload: the only thing the side pipe would give is the
        // tar's length for the End frame. When the file's zstd frames declare their sizes, that length is their sum,
        // and the frames go out with no decompression at all (one core's zstd speed would otherwise cap a fast link).
        // Every node still decompresses, its decoder checks each frame's declared size, and it compares the whole
        // length with the End frame's: a file whose headers lie fails every node, loudly.
        if (!_options.Digest.IsContentDigest() && _options.Source is ImageSource image && image.DeclaredContentLength() is long declared)
        {
            await Task.Run(() => _options.Source.WriteToAsync(writer, ct), ct).ConfigureAwait(false);
            return await EndStreamAsync(writer, declared, null, " (as its zstd frames declare)", ct).ConfigureAwait(false);
        }
        var pipe = new System.IO.Pipelines.Pipe(new System.IO.Pipelines.PipeOptions(pauseWriterThreshold: 8 << 20, resumeWriterThreshold: 4 << 20));
        var hashing = Task.Run(async () =>
        {
            await using var compressed = pipe.Reader.AsStream();
            await using var plain = new DecompressionStream(compressed, 1 << 20, leaveOpen: true);
            using var digest = new DigestReadStream(plain, _options.Digest);
            await digest.DrainAsync(ct).ConfigureAwait(false); // the payload's length is in the End frame, whatever the digest
            return (digest.BytesRead, _options.Digest.IsContentDigest() ? digest.Digest() : null);
        }, ct);
        try
        {
            await using (var tee = new TeeWriteStream(writer, pipe.Writer.AsStream(leaveOpen: true)))
                await Task.Run(() => _options.Source.WriteToAsync(tee, ct), ct).ConfigureAwait(false);
            await pipe.Writer.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception e)
        {
            await pipe.Writer.CompleteAsync(e).ConfigureAwait(false);
            throw;
        }
        var (length, content) = await hashing.ConfigureAwait(false);
        return await EndStreamAsync(writer, length, content, "", ct).ConfigureAwait(false);
    }

    // XXH3-128 (also the frames digest's hash) fills 16 of the 32 digest bytes; the rest are padding, not worth showing.
    internal static string Hex(DigestAlgorithm algorithm, byte[] digest) =>
        Convert.ToHexStringLower(algorithm is DigestAlgorithm.XxHash128 or DigestAlgorithm.Frames ? digest.AsSpan(0, 16) : digest);

    private async Task FailUnlinkedAsync(ServerNode[] nodes, IReadOnlyList<NodePlacement> placements,
        Dictionary<int, ServerNode> byId, CancellationToken ct)
    {
        var children = placements.ToDictionary(p => p.Node.NodeId, p => p.ChildIds);
        foreach (var root in nodes.Where(n => !n.Linked.IsCompleted).ToArray())
        {
            string reason = $"no upstream link within {_options.LinkTimeout.TotalSeconds:0} s";
            Log($"node {root.Id} {root.Report.Name}: {reason}");
            var stack = new Stack<(ServerNode Node, string Reason)>();
            stack.Push((root, reason));
            while (stack.Count > 0)
            {
                var (n, why) = stack.Pop();
                lock (_gate) n.Gone = n.Detached = true;
                n.Fail(why);
                await n.TrySendAsync(new Abort(why), ct).ConfigureAwait(false);
                foreach (int c in children[n.Id]) stack.Push((byId[c], $"upstream node {root.Id} never linked"));
            }
        }
    }
}
