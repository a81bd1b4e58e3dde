using System.Net;
using KaDeploy.Payloads;
using KaDeploy.Protocol;
using KaDeploy.Transport;

namespace KaDeploy.Session;

/// <summary>Everything <see cref="DeployServer"/> needs; the CLI fills it from options.</summary>
public sealed class ServerOptions
{
    /// <summary>What to send.</summary>
    public required IPayloadSource Source { get; init; }
    /// <summary>Clients to wait for (-n).</summary>
    public int Clients { get; init; } = 1;
    /// <summary>With <see cref="StartTimeout"/>: start with at least this many.</summary>
    public int MinClients { get; init; } = 1;
    /// <summary>Start after this long if at least <see cref="MinClients"/> registered.</summary>
    public TimeSpan? StartTimeout { get; init; }
    /// <summary>Tree arity (-a); 1 = chain.</summary>
    public int Arity { get; init; } = 1;
    /// <summary>Session name (-s); clients of another session are refused.</summary>
    public string Session { get; init; } = "default";
    /// <summary>Local address for all listeners.</summary>
    public IPAddress Bind { get; init; } = IPAddress.Any;
    /// <summary>Control port (-p).</summary>
    public int ControlPort { get; init; } = ProtocolConstants.DefaultControlPort;
    /// <summary>Data port the server's own children connect to (-P); 0 = any free port.</summary>
    public int DataPort { get; init; }
    /// <summary>Answer UDP session discovery.</summary>
    public bool Discovery { get; init; } = true;
    /// <summary>UDP port of session discovery (4957, the original's; tests and side-by-side clusters pick their own).</summary>
    public int DiscoveryPort { get; init; } = ProtocolConstants.DiscoveryPort;
    /// <summary>Wire compression.</summary>
    public WireCompression Compression { get; init; }
    /// <summary>The source already writes zstd (a .tar.zst image): relay it as is, with <see cref="Compression"/> = Zstd.</summary>
    public bool SourceIsZstd { get; init; }
    /// <summary>End-to-end digest every node checks its copy against (--digest).</summary>
    public DigestAlgorithm Digest { get; init; } = DigestAlgorithm.Frames;
    /// <summary>zstd level.</summary>
    public int CompressionLevel { get; init; } = 3;
    /// <summary>Relay ring size.</summary>
    public long BufferBytes { get; init; } = 64L << 20;
    /// <summary>Pause between releases of waiting clients (-d, tenths of a second in the compat CLI).</summary>
    public TimeSpan ReleaseDelay { get; init; }
    /// <summary>Node order from --nodes (names or addresses), else by address.</summary>
    public IReadOnlyList<string>? NodeOrder { get; init; }
    /// <summary>How long every node has to link up to its parent once the plan is out.</summary>
    public TimeSpan LinkTimeout { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>Give up on a child link that holds a full relay buffer back this long (0 = never).</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>How long unacknowledged data may sit before a peer is declared dead (TCP_USER_TIMEOUT).</summary>
    public TimeSpan DeadPeerTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>A node silent this long (no heartbeat, sent every 0.5 s) is declared failed and its children re-attached (--failure-timeout).</summary>
    public TimeSpan FailureTimeout { get; init; } = TimeSpan.FromSeconds(3);
    /// <summary>
    /// Spool of the produced wire stream, for resumes no relay can serve: a directory (the whole stream, in
    /// an unlinked file), or null for memory (the last <see cref="SpoolMemoryBytes"/>).
    /// </summary>
    public string? SpoolDirectory { get; init; }
    /// <summary>No spool at all (--spool none): a resume no relay holds fails its subtree.</summary>
    public bool NoSpool { get; init; }
    /// <summary>Memory the memory spool may use: it keeps that many bytes of the stream, about half in a keyed session
    /// (each slot also holds the frame opened); its description says how much.</summary>
    public long SpoolMemoryBytes { get; init; } = 1L << 30;
    /// <summary>
    /// Without a spool directory, a source the server can read again (an uncompressed image file, a block device) is its
    /// own spool: only an index is kept, and a resume re-reads the file (issue 10). False keeps the memory spool (--spool memory).
    /// </summary>
    public bool SpoolRereadsSource { get; init; } = true;
    /// <summary>
    /// A node whose own sink keeps its ring full this long, taking less than half the tree's speed, is moved off the
    /// main tree and fed from the spool once the others are served (--slow-after; 0 = never). Short, because every
    /// second it holds, the whole tree moves at its pace.
    /// </summary>
    public TimeSpan SlowNodeAfter { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>Links: TCP unless a test passes an in-memory (or faulty) transport.</summary>
    public ITransport? Transport { get; init; }
    /// <summary>The pre-shared key (--key-file): every connection authenticated, control frames and data sealed. Null: clear.</summary>
    public Security.PresharedKey? Key { get; init; }
    /// <summary>
    /// The AEAD of a keyed session's frames (--cipher); null = auto: AEGIS-256 where this process loads libsodium with
    /// AEGIS, else AES-256-GCM. Carried to the nodes in their sealed Plans.
    /// </summary>
    public Security.StreamCipherKind? Cipher { get; init; }
    /// <summary>The step run on every connection before any session message; null = the v2 handshake with <see cref="Key"/>.</summary>
    public IConnectionHandshake? Handshake { get; init; }
    /// <summary>Where log lines go.</summary>
    public TextWriter Log { get; init; } = TextWriter.Null;
    /// <summary>Draw live progress in place (a terminal), or log a line now and then (null = no progress).</summary>
    public bool? ProgressOnTerminal { get; init; }
}
