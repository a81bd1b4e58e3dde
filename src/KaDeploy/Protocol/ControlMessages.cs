using System.Net;
using KaDeploy.Payloads;

namespace KaDeploy.Protocol;

/// <summary>Type byte of a control frame.</summary>
public enum ControlType : byte
{
    Hello = 1, Welcome = 2, Refuse = 3, Plan = 4, LinkUp = 5, Progress = 6,
    Done = 7, Release = 8, Abort = 9, ChildLost = 10, DataHello = 11, DataAccept = 12, Ping = 13,
    // v2, repair (docs/protocol.md section 4)
    Heartbeat = 14, Adopt = 15, Reattach = 16, ResumeFailed = 17, Moved = 18, DropChild = 19,
}

/// <summary>Why a peer opened a control connection.</summary>
public enum HelloRole : byte
{
    /// <summary>A node that wants to receive the payload.</summary>
    Client = 1,
    /// <summary>`ka-deploy go` / `ka-d-client -g`: start now with the clients registered so far.</summary>
    Go = 2,
}

/// <summary>Stream compression used on the wire.</summary>
public enum WireCompression : byte { None = 0, Zstd = 1 }

/// <summary>A control-plane message. Encoded by <see cref="ControlCodec"/>; no reflection, so NativeAOT is happy.</summary>
public abstract record ControlMessage(ControlType Type);

/// <summary>First message of a control connection: who is calling, for which session and protocol version.</summary>
public sealed record Hello(ushort Version, HelloRole Role, string Session, string NodeName, string DataAddress, int DataPort)
    : ControlMessage(ControlType.Hello);

/// <summary>Registration accepted; the node's id for this session.</summary>
public sealed record Welcome(int NodeId, int Registered, int Expected) : ControlMessage(ControlType.Welcome);

/// <summary>Registration or link refused, with the reason the operator reads.</summary>
public sealed record Refuse(string Reason) : ControlMessage(ControlType.Refuse);

/// <summary>
/// The node's place in the tree: whom to connect to, which children will connect, and what will flow.
/// In a keyed session it also carries the stream key and id that open the sealed data frames
/// (docs/protocol.md section 3); it only ever travels in a sealed control frame. No key: clear frames.
/// </summary>
public sealed record Plan(
    int NodeId, int ParentId, string ParentAddress, int ParentPort, int[] ChildIds,
    PayloadKind Kind, WireCompression Compression, long EstimatedLength, byte[] LinkKey,
    DigestAlgorithm Digest = DigestAlgorithm.Sha256, byte[]? StreamKey = null, uint StreamId = 0,
    Security.StreamCipherKind Cipher = Security.StreamCipherKind.Aes256Gcm)
    : ControlMessage(ControlType.Plan)
{
    /// <summary>The frames are sealed: the plan carries a stream key.</summary>
    public bool Keyed => StreamKey is { Length: > 0 };

    /// <summary>Never the keys: a record's generated text would print them if they were strings, and logs must not hold them.</summary>
    protected override bool PrintMembers(System.Text.StringBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Append($"NodeId = {NodeId}, ParentId = {ParentId}, ParentAddress = {ParentAddress}, ParentPort = {ParentPort}, Kind = {Kind}, Keyed = {Keyed}");
        return true;
    }
}

/// <summary>The node's upstream link is established.</summary>
public sealed record LinkUp() : ControlMessage(ControlType.LinkUp);

/// <summary>Periodic position report (bytes received on the wire, bytes handed to the sink).</summary>
public sealed record Progress(long WireBytes, long PayloadBytes) : ControlMessage(ControlType.Progress);

/// <summary>Final report of a node: verified means the SHA-256 matched and the sink made everything durable.</summary>
public sealed record Done(bool Verified, long WireBytes, long PayloadBytes, long ElapsedMilliseconds, string Message)
    : ControlMessage(ControlType.Done);

/// <summary>The server lets a waiting (-w) client exit.</summary>
public sealed record Release() : ControlMessage(ControlType.Release);

/// <summary>The server gives up on this node or the session.</summary>
public sealed record Abort(string Reason) : ControlMessage(ControlType.Abort);

/// <summary>A node lost its link to a child.</summary>
public sealed record ChildLost(int ChildId, string Reason) : ControlMessage(ControlType.ChildLost);

/// <summary>First message on a data link, child to parent.</summary>
public sealed record DataHello(ushort Version, byte[] LinkKey, int NodeId, long ResumeOffset) : ControlMessage(ControlType.DataHello);

/// <summary>Data link accepted; frames follow.</summary>
public sealed record DataAccept() : ControlMessage(ControlType.DataAccept);

/// <summary>Keep-alive from the server while clients wait.</summary>
public sealed record Ping() : ControlMessage(ControlType.Ping);

/// <summary>What holds a node's relay back, as its heartbeat says (the server moves a node held by its own sink).</summary>
public enum FlowState : byte
{
    /// <summary>Data moves, or nothing to do yet.</summary>
    Flowing = 0,
    /// <summary>The ring is full and the local sink (disk, command) is the slowest consumer: a slow node.</summary>
    HeldBySink = 1,
    /// <summary>The ring is full and a child link is the slowest consumer.</summary>
    HeldByChild = 2,
    /// <summary>No upstream link: waiting for a new parent.</summary>
    Orphaned = 3,
    /// <summary>The whole stream is here (End frame received).</summary>
    Complete = 4,
}

/// <summary>
/// Both ways every 0.5 s on the control connection: the node's verified wire offset and flow state
/// (node to server), or just "alive" (server to node, offset 0). Silence for --failure-timeout means
/// the peer is dead, stopped or cut off.
/// </summary>
/// <remarks><paramref name="RetainedFrom"/>: node to server, the oldest wire offset its ring still holds (a repair sends an
/// orphan only to a parent that holds its offset); -1 = not said (the server's heartbeats), and then not on the wire.</remarks>
public sealed record Heartbeat(long VerifiedOffset, FlowState State, long RetainedFrom = -1) : ControlMessage(ControlType.Heartbeat);

/// <summary>Server to node: accept a data link from one more child (the orphan of a failed node).</summary>
public sealed record Adopt(int ChildId) : ControlMessage(ControlType.Adopt);

/// <summary>Server to orphan: link to a new parent (id 0 = the server; empty address = the server's host) and resume.</summary>
public sealed record Reattach(int ParentId, string ParentAddress, int ParentPort) : ControlMessage(ControlType.Reattach);

/// <summary>Node to server: the new parent could not serve the resume offset (or could not be reached).</summary>
public sealed record ResumeFailed(int ParentId, long Offset, string Reason) : ControlMessage(ControlType.ResumeFailed);

/// <summary>Server to node: this node was moved (slow); the reason goes into its log and report.</summary>
public sealed record Moved(string Reason) : ControlMessage(ControlType.Moved);

/// <summary>Server to node: stop serving this child (declared failed or moved); its link is closed with the reason.</summary>
public sealed record DropChild(int ChildId, string Reason) : ControlMessage(ControlType.DropChild);
