using System.Buffers;
using System.Buffers.Binary;
using KaDeploy.Security;

namespace KaDeploy.Protocol;

/// <summary>
/// Framed control messages over a stream. Sends are serialised (several tasks may report on one
/// channel); receives belong to one reader loop. After a keyed handshake every frame is sealed
/// (<see cref="ControlCipher"/>): <c>u32 length | ciphertext(u8 type | body) | 16-byte tag</c>.
/// </summary>
public sealed class ControlChannel : IAsyncDisposable
{
    private readonly Stream _stream;
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private readonly ArrayBufferWriter<byte> _sendBuffer = new(256);
    private readonly byte[] _lengthBuffer = new byte[4];
    private byte[] _receiveBuffer = new byte[256];
    private byte[] _plainBuffer = [];
    private readonly ControlCipher? _cipher;

    public ControlChannel(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        _stream = stream;
    }

    /// <summary>A channel whose frames are sealed with the keys of the connection's handshake (null: clear, as v1).</summary>
    public ControlChannel(Stream stream, ControlCipher? cipher) : this(stream)
    {
        _cipher = cipher;
    }

    /// <summary>Frames are sealed (the connection's handshake was keyed).</summary>
    public bool IsSealed => _cipher is not null;

    /// <summary>The underlying stream (a data link switches to raw frames after its handshake).</summary>
    public Stream Stream => _stream;

    /// <summary>Sends one message.</summary>
    public async Task SendAsync(ControlMessage message, CancellationToken cancellationToken)
    {
        await _sendLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            _sendBuffer.Clear();
            ControlCodec.Encode(message, _sendBuffer);
            if (_cipher is not null)
            {
                _sendBuffer.GetSpan(ControlCipher.TagSize); // room for the tag, filled by Seal
                _sendBuffer.Advance(ControlCipher.TagSize);
                _cipher.Seal(System.Runtime.InteropServices.MemoryMarshal.AsMemory(_sendBuffer.WrittenMemory).Span);
            }
            await _stream.WriteAsync(_sendBuffer.WrittenMemory, cancellationToken).ConfigureAwait(false);
            await _stream.FlushAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _sendLock.Release();
        }
    }

    /// <summary>Receives one message, or null when the peer closed the connection cleanly between messages.</summary>
    public async Task<ControlMessage?> ReceiveAsync(CancellationToken cancellationToken)
    {
        int got = await _stream.ReadAtLeastAsync(_lengthBuffer, 4, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
        if (got == 0) return null;
        if (got < 4) throw new ProtocolException("control connection closed in the middle of a frame");
        int length = BinaryPrimitives.ReadInt32LittleEndian(_lengthBuffer);
        int tag = _cipher is null ? 0 : ControlCipher.TagSize;
        if (length < 1 + tag || length > ProtocolConstants.MaxControlFrame + tag)
            throw new ProtocolException($"control frame of {length} bytes (limit {ProtocolConstants.MaxControlFrame + tag})");
        if (_receiveBuffer.Length < length) _receiveBuffer = new byte[Math.Max(length, _receiveBuffer.Length * 2)];
        got = await _stream.ReadAtLeastAsync(_receiveBuffer.AsMemory(0, length), length, throwOnEndOfStream: false, cancellationToken).ConfigureAwait(false);
        if (got < length) throw new ProtocolException("control connection closed in the middle of a frame");
        if (_cipher is null) return ControlCodec.Decode(_receiveBuffer.AsSpan(0, length));
        if (_plainBuffer.Length < length) _plainBuffer = new byte[_receiveBuffer.Length];
        _cipher.Open(_lengthBuffer, _receiveBuffer.AsSpan(0, length), _plainBuffer);
        return ControlCodec.Decode(_plainBuffer.AsSpan(0, length - tag));
    }

    /// <summary>Receives one message and insists on its type.</summary>
    public async Task<T> ExpectAsync<T>(CancellationToken cancellationToken) where T : ControlMessage
    {
        var m = await ReceiveAsync(cancellationToken).ConfigureAwait(false)
            ?? throw new ProtocolException($"peer closed the connection while {typeof(T).Name} was expected");
        return m switch
        {
            T t => t,
            Refuse r => throw new KaDeployException($"refused: {r.Reason}"),
            Abort a => throw new KaDeployException($"aborted: {a.Reason}"),
            _ => throw new ProtocolException($"got {m.Type} while {typeof(T).Name} was expected"),
        };
    }

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync().ConfigureAwait(false);
        _sendLock.Dispose();
        _cipher?.Dispose();
    }
}
