using KaDeploy.Payloads.Parts;
using KaDeploy.Protocol;
using KaDeploy.Reporting;

namespace KaDeploy.Install;

/// <summary>
/// The server's record of an install session's parts as it sends them (from <see cref="MultiPartSource"/>'s part
/// events, on the producing thread), read by the live view while the session runs and put into the report at its end.
/// </summary>
public sealed class InstallPartLog
{
    private readonly Lock _gate = new();
    private readonly List<PartReport> _parts;
    private readonly DigestAlgorithm _digest;

    /// <param name="parts">Every part of the session, in stream order: all are listed from the start, none sent yet.</param>
    /// <param name="digest">The parts' digest algorithm.</param>
    public InstallPartLog(IReadOnlyList<PartSource> parts, DigestAlgorithm digest = DigestAlgorithm.Sha256)
    {
        _digest = digest;
        ArgumentNullException.ThrowIfNull(parts);
        _parts = [.. parts.Select((p, i) => new PartReport { Index = i, Kind = p.Kind.ToString().ToLowerInvariant(), Name = p.Name })];
    }

    /// <summary>Follows <paramref name="source"/>'s part events (keeping whatever handler it already has).</summary>
    public static InstallPartLog Follow(MultiPartSource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        var log = new InstallPartLog(source.Parts, source.Digest);
        var before = source.OnPart;
        source.OnPart = e =>
        {
            before?.Invoke(e);
            log.Record(e);
        };
        return log;
    }

    /// <summary>Records a part starting or ending.</summary>
    public void Record(PartEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        lock (_gate)
        {
            if (e.Header.Index < 0 || e.Header.Index >= _parts.Count) return;
            var r = _parts[e.Header.Index];
            r.Started = true;
            r.Offset = e.Offset;
            if (!e.Finished) return;
            r.Bytes = e.Bytes;
            r.End = e.End;
            r.Seconds = Math.Round(e.Elapsed.TotalSeconds, 3);
            r.Digest = e.Digest is null ? "" : Session.DeployServer.Hex(_digest, e.Digest);
            r.DigestAlgorithm = _digest.Name();
        }
    }

    /// <summary>A copy of the parts as they stand.</summary>
    public IReadOnlyList<PartReport> Snapshot()
    {
        lock (_gate)
        {
            return [.. _parts.Select(p => new PartReport
            {
                Index = p.Index, Kind = p.Kind, Name = p.Name, Bytes = p.Bytes, Offset = p.Offset, End = p.End, Seconds = p.Seconds,
                Digest = p.Digest, DigestAlgorithm = p.DigestAlgorithm, Started = p.Started,
            })];
        }
    }
}
