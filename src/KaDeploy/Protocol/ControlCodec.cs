using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using KaDeploy.Payloads;

namespace KaDeploy.Protocol;

/// <summary>
/// Binary encoding of control messages: <c>u32 length | u8 type | body</c>, little endian,
/// strings as <c>u16 length | UTF-8</c>. Every read is bounds-checked; malformed input throws
/// <see cref="ProtocolException"/>.
/// </summary>
public static class ControlCodec
{
    /// <summary>Appends one framed message to <paramref name="output"/>.</summary>
    public static void Encode(ControlMessage message, ArrayBufferWriter<byte> output)
    {
        var w = new Writer(output);
        int start = output.WrittenCount;
        w.U32(0); // length, patched below
        w.U8((byte)message.Type);
        switch (message)
        {
            case Hello h:
                w.Bytes(ProtocolConstants.Magic); w.U16(h.Version); w.U8((byte)h.Role);
                w.Str(h.Session); w.Str(h.NodeName); w.Str(h.DataAddress); w.U16((ushort)h.DataPort);
                break;
            case Welcome m: w.I32(m.NodeId); w.I32(m.Registered); w.I32(m.Expected); break;
            case Refuse m: w.Str(m.Reason); break;
            case Plan p:
                w.I32(p.NodeId); w.I32(p.ParentId); w.Str(p.ParentAddress); w.U16((ushort)p.ParentPort);
                w.U16((ushort)p.ChildIds.Length);
                foreach (int c in p.ChildIds) w.I32(c);
                w.U8((byte)p.Kind); w.U8((byte)p.Compression); w.I64(p.EstimatedLength); w.Blob(p.LinkKey); w.U8((byte)p.Digest);
                w.Blob(p.StreamKey ?? []); w.U32(p.StreamId); // issue 9: keyed sessions (empty key: clear frames)
                w.U8((byte)p.Cipher); // the server's choice of AEAD: it travels sealed, so no one without the key can downgrade it
                break;
            case Progress m: w.I64(m.WireBytes); w.I64(m.PayloadBytes); break;
            case Done m: w.U8(m.Verified ? (byte)1 : (byte)0); w.I64(m.WireBytes); w.I64(m.PayloadBytes); w.I64(m.ElapsedMilliseconds); w.Str(m.Message); break;
            case Abort m: w.Str(m.Reason); break;
            case ChildLost m: w.I32(m.ChildId); w.Str(m.Reason); break;
            case DataHello m: w.Bytes(ProtocolConstants.Magic); w.U16(m.Version); w.Blob(m.LinkKey); w.I32(m.NodeId); w.I64(m.ResumeOffset); break;
            case Heartbeat m: w.I64(m.VerifiedOffset); w.U8((byte)m.State); if (m.RetainedFrom >= 0) w.I64(m.RetainedFrom); break;
            case Adopt m: w.I32(m.ChildId); break;
            case Reattach m: w.I32(m.ParentId); w.Str(m.ParentAddress); w.U16((ushort)m.ParentPort); break;
            case ResumeFailed m: w.I32(m.ParentId); w.I64(m.Offset); w.Str(m.Reason); break;
            case Moved m: w.Str(m.Reason); break;
            case DropChild m: w.I32(m.ChildId); w.Str(m.Reason); break;
            case LinkUp or Release or DataAccept or Ping: break;
            default: throw new ArgumentException($"cannot encode {message.GetType().Name}", nameof(message));
        }
        int length = output.WrittenCount - start - 4;
        // ArrayBufferWriter exposes written memory read-only; patch the length through the underlying span.
        BinaryPrimitives.WriteInt32LittleEndian(
            System.Runtime.InteropServices.MemoryMarshal.AsMemory(output.WrittenMemory).Span[start..], length);
    }

    /// <summary>Decodes one message body (the bytes after the length prefix).</summary>
    public static ControlMessage Decode(ReadOnlySpan<byte> frame)
    {
        var r = new Reader(frame);
        var type = (ControlType)r.U8();
        ControlMessage m = type switch
        {
            ControlType.Hello => DecodeHello(ref r),
            ControlType.Welcome => new Welcome(r.I32(), r.I32(), r.I32()),
            ControlType.Refuse => new Refuse(r.Str()),
            ControlType.Plan => DecodePlan(ref r),
            ControlType.LinkUp => new LinkUp(),
            ControlType.Progress => new Progress(r.I64(), r.I64()),
            ControlType.Done => new Done(r.U8() != 0, r.I64(), r.I64(), r.I64(), r.Str()),
            ControlType.Release => new Release(),
            ControlType.Abort => new Abort(r.Str()),
            ControlType.ChildLost => new ChildLost(r.I32(), r.Str()),
            ControlType.DataHello => DecodeDataHello(ref r),
            ControlType.DataAccept => new DataAccept(),
            ControlType.Ping => new Ping(),
            ControlType.Heartbeat => DecodeHeartbeat(ref r),
            ControlType.Adopt => new Adopt(r.I32()),
            ControlType.Reattach => new Reattach(r.I32(), r.Str(), r.U16()),
            ControlType.ResumeFailed => new ResumeFailed(r.I32(), r.I64(), r.Str()),
            ControlType.Moved => new Moved(r.Str()),
            ControlType.DropChild => new DropChild(r.I32(), r.Str()),
            _ => throw new ProtocolException($"unknown control message type {(byte)type}"),
        };
        if (!r.AtEnd) throw new ProtocolException($"{type} message has {r.Remaining} trailing bytes");
        return m;
    }

    private static void CheckMagic(ref Reader r)
    {
        if (!r.Take(ProtocolConstants.Magic.Length).SequenceEqual(ProtocolConstants.Magic))
            throw new ProtocolException("not a ka-deploy peer (bad magic)");
    }

    private static Hello DecodeHello(ref Reader r)
    {
        CheckMagic(ref r);
        ushort version = r.U16();
        var role = (HelloRole)r.U8();
        if (role is not (HelloRole.Client or HelloRole.Go)) throw new ProtocolException($"unknown hello role {(byte)role}");
        return new Hello(version, role, r.Str(), r.Str(), r.Str(), r.U16());
    }

    private static Plan DecodePlan(ref Reader r)
    {
        int nodeId = r.I32(), parentId = r.I32();
        string parentAddress = r.Str();
        int parentPort = r.U16();
        int children = r.U16();
        if (children > 64) throw new ProtocolException($"plan names {children} children, more than any arity allows");
        var ids = new int[children];
        for (int i = 0; i < children; i++) ids[i] = r.I32();
        var kind = (PayloadKind)r.U8();
        if (!Enum.IsDefined(kind)) throw new ProtocolException($"unknown payload kind {(byte)kind}");
        var compression = (WireCompression)r.U8();
        if (!Enum.IsDefined(compression)) throw new ProtocolException($"unknown compression {(byte)compression}");
        long estimated = r.I64();
        byte[] linkKey = r.Blob();
        var digest = (DigestAlgorithm)r.U8();
        if (!Enum.IsDefined(digest)) throw new ProtocolException($"unknown digest algorithm {(byte)digest}");
        byte[] streamKey = r.Blob();
        if (streamKey.Length is not (0 or Security.StreamCipher.KeySize)) throw new ProtocolException($"plan carries a {streamKey.Length}-byte stream key");
        uint streamId = r.U32();
        var cipher = (Security.StreamCipherKind)r.U8();
        if (!Enum.IsDefined(cipher)) throw new ProtocolException($"plan names unknown stream cipher {(byte)cipher}");
        return new Plan(nodeId, parentId, parentAddress, parentPort, ids, kind, compression, estimated, linkKey, digest, streamKey.Length == 0 ? null : streamKey, streamId, cipher);
    }

    private static Heartbeat DecodeHeartbeat(ref Reader r)
    {
        long offset = r.I64();
        var state = (FlowState)r.U8();
        if (offset < 0) throw new ProtocolException($"heartbeat at negative offset {offset}");
        if (!Enum.IsDefined(state)) throw new ProtocolException($"unknown flow state {(byte)state}");
        // The retained-from offset is optional (the server's heartbeats leave it out).
        long retained = -1;
        if (r.Remaining >= 8 && ((retained = r.I64()) < 0 || retained > offset))
            throw new ProtocolException($"heartbeat says it holds from offset {retained}, outside 0..{offset}");
        return new Heartbeat(offset, state, retained);
    }

    private static DataHello DecodeDataHello(ref Reader r)
    {
        CheckMagic(ref r);
        return new DataHello(r.U16(), r.Blob(), r.I32(), r.I64());
    }

    private readonly ref struct Writer(ArrayBufferWriter<byte> output)
    {
        private readonly ArrayBufferWriter<byte> _out = output;
        public void U8(byte v) { _out.GetSpan(1)[0] = v; _out.Advance(1); }
        public void U16(ushort v) { BinaryPrimitives.WriteUInt16LittleEndian(_out.GetSpan(2), v); _out.Advance(2); }
        public void U32(uint v) { BinaryPrimitives.WriteUInt32LittleEndian(_out.GetSpan(4), v); _out.Advance(4); }
        public void I32(int v) { BinaryPrimitives.WriteInt32LittleEndian(_out.GetSpan(4), v); _out.Advance(4); }
        public void I64(long v) { BinaryPrimitives.WriteInt64LittleEndian(_out.GetSpan(8), v); _out.Advance(8); }
        public void Bytes(ReadOnlySpan<byte> v) { v.CopyTo(_out.GetSpan(v.Length)); _out.Advance(v.Length); }
        public void Blob(ReadOnlySpan<byte> v) { U16(checked((ushort)v.Length)); Bytes(v); }
        public void Str(string s)
        {
            int n = Encoding.UTF8.GetByteCount(s);
            if (n > 4096) throw new ArgumentException($"control string of {n} bytes is too long");
            U16((ushort)n);
            Encoding.UTF8.GetBytes(s, _out.GetSpan(n));
            _out.Advance(n);
        }
    }

    private ref struct Reader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _pos;
        public readonly bool AtEnd => _pos == _data.Length;
        public readonly int Remaining => _data.Length - _pos;
        public ReadOnlySpan<byte> Take(int n)
        {
            if (n < 0 || n > _data.Length - _pos) throw new ProtocolException("control message is truncated");
            var s = _data.Slice(_pos, n);
            _pos += n;
            return s;
        }
        public byte U8() => Take(1)[0];
        public ushort U16() => BinaryPrimitives.ReadUInt16LittleEndian(Take(2));
        public int I32() => BinaryPrimitives.ReadInt32LittleEndian(Take(4));
        public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));
        public long I64() => BinaryPrimitives.ReadInt64LittleEndian(Take(8));
        public byte[] Blob() => Take(U16()).ToArray();
        public string Str()
        {
            var bytes = Take(U16());
            try { return new UTF8Encoding(false, true).GetString(bytes); }
            catch (DecoderFallbackException) { throw new ProtocolException("control string is not valid UTF-8"); }
        }
    }
}
