using System.Net;
using KaDeploy.Payloads;
using KaDeploy.Protocol;
using KaDeploy.Transport;

namespace KaDeploy.Session;

/// <summary>Everything <see cref="DeployClient"/> needs; the CLI fills it from options.</summary>
public sealed class ClientOptions
{
    /// <summary>Server as HOST[:PORT]; null = find it by <see cref="Session"/>.</summary>
    public string? Server { get; init; }
    /// <summary>Session name, checked by the server and used for discovery.</summary>
    public string Session { get; init; } = "default";
    /// <summary>Where discovery requests are broadcast.</summary>
    public IPAddress DiscoveryAddress { get; init; } = IPAddress.Broadcast;
    /// <summary>UDP port of session discovery (4957, the original's; tests and side-by-side clusters pick their own).</summary>
    public int DiscoveryPort { get; init; } = ProtocolConstants.DiscoveryPort;
    /// <summary>Local address for the data listener and outgoing links (each loopback client has its own 127.0.0.x).</summary>
    public IPAddress? Bind { get; init; }
    /// <summary>Port children connect to (-P); 0 = any free port.</summary>
    public int DataPort { get; init; }
    /// <summary>Makes the sink once the plan says what is coming; throws <see cref="KaDeployException"/> if this node cannot take it.</summary>
    public required Func<Plan, IPayloadSink> SinkFactory { get; init; }
    /// <summary>Relay ring size (--buffer).</summary>
    public long BufferBytes { get; init; } = 64L << 20;
    /// <summary>Exit only when the server releases us (-w).</summary>
    public bool WaitRelease { get; init; }
    /// <summary>How long to keep trying to reach a server that is not up yet.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromMinutes(10);
    /// <summary>How long to keep trying to reach the parent's data port.</summary>
    public TimeSpan LinkTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Give up on a child link or on the local sink when it holds a full relay buffer back this long (0 = never).</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(60);
    /// <summary>TCP_USER_TIMEOUT for links.</summary>
    public TimeSpan DeadPeerTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>The server silent this long means it is lost (--failure-timeout); also how long a new parent has to answer.</summary>
    public TimeSpan FailureTimeout { get; init; } = TimeSpan.FromSeconds(3);
    /// <summary>Kept in the ring behind the slowest consumer, for orphans that resume from this node (--retain).</summary>
    public long RetainBytes { get; init; } = 16L << 20;
    /// <summary>
    /// The --target path, for the "not verified" marker written before the first byte and removed only once
    /// the copy is verified: TARGET/.ka-deploy-incomplete for a directory, TARGET.ka-deploy-incomplete for a
    /// file. Null (devices, commands) = no marker: there the exit code and the report are the record.
    /// </summary>
    public string? IncompleteMarkerTarget { get; init; }
    /// <summary>Links: TCP unless a test passes an in-memory (or faulty) transport.</summary>
    public ITransport? Transport { get; init; }
    /// <summary>The pre-shared key (--key-file): the server, the parents and the discovery answer must prove they hold it. Null: clear.</summary>
    public Security.PresharedKey? Key { get; init; }
    /// <summary>Tests: where to look for libsodium instead of the shipped places (a node that lacks AEGIS).</summary>
    internal IReadOnlyList<string>? LibsodiumCandidates { get; init; }
    /// <summary>The step run on every connection before any session message; null = the v2 handshake with <see cref="Key"/>.</summary>
    public IConnectionHandshake? Handshake { get; init; }
    /// <summary>Name reported to the server.</summary>
    public string NodeName { get; init; } = Environment.MachineName;
    /// <summary>Where log lines go.</summary>
    public TextWriter Log { get; init; } = TextWriter.Null;
    /// <summary>Live progress: in place on a terminal, periodic lines otherwise, none when null.</summary>
    public bool? ProgressOnTerminal { get; init; }
}

/// <summary>A client's outcome.</summary>
public sealed record ClientResult(bool Verified, long WireBytes, long PayloadBytes, TimeSpan Elapsed, string Message, int NodeId);
