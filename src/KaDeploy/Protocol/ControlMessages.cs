using System.Net;
using KaDeploy.Payloads;

namespace KaDeploy.Protocol;

/// <summary>Type byte of a control frame.</summary>
public enum ControlType : byte
{
    Hello = 1, Welcome = 2, Refuse = 3, Plan = 4, LinkUp = 5, Progress = 6,
    Done = 7, Release = 8, Abort = 9, ChildLost = 10, DataHello = 11, DataAccept = 12, Ping = 13,
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

/// <summary>The node's place in the tree: whom to connect to, which children will connect, and what will flow.</summary>
public sealed record Plan(
    int NodeId, int ParentId, string ParentAddress, int ParentPort, int[] ChildIds,
    PayloadKind Kind, WireCompression Compression, long EstimatedLength, byte[] LinkKey,
    DigestAlgorithm Digest = DigestAlgorithm.Sha256)
    : ControlMessage(ControlType.Plan);

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
