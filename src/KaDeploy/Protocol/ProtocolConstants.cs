namespace KaDeploy.Protocol;

/// <summary>Numbers both ends must agree on. Bump <see cref="Version"/> on any wire change.</summary>
public static class ProtocolConstants
{
    /// <summary>Wire protocol version; a peer with another version is refused with a clear message.</summary>
    // 2: End frame names its digest algorithm; heartbeats and repair (docs/protocol.md).
    // 3: the Plan names the data cipher (AEGIS-256, AEGIS-128L or AES-256-GCM) and frame flags name it too, so a
    // version 2 peer is refused in the handshake with this number rather than failing on the Plan's extra byte; a node's
    // Heartbeat may end with the oldest offset its ring holds (repair picks holders by it).
    public const ushort Version = 3;

    /// <summary>"KADEPLOY" — first bytes of every control Hello and data-link hello, so garbage is recognised at once.</summary>
    public static ReadOnlySpan<byte> Magic => "KADEPLOY"u8;

    /// <summary>The original's control port.</summary>
    public const int DefaultControlPort = 30765;

    /// <summary>UDP port the server listens on for session discovery (as the original).</summary>
    public const int DiscoveryPort = 4957;

    /// <summary>Largest control frame accepted; anything bigger is a protocol error, not an allocation.</summary>
    public const int MaxControlFrame = 64 * 1024;

    /// <summary>Largest data-frame payload. A frame is one slot of the relay ring.</summary>
    // 64 KiB: each hop stores and verifies a whole frame before forwarding it, so the frame size is
    // the per-hop delay (2.6 ms at 200 Mbit/s; 16 hops add 42 ms), while 32 header bytes stay 0.05 %.
    public const int MaxChunkPayload = 64 * 1024;
}
