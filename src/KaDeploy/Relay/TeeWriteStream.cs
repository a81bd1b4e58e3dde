using KaDeploy.IO;
namespace KaDeploy.Relay;

/// <summary>Writes everything to two streams, in order (the wire first, then a side consumer).</summary>
public sealed class TeeWriteStream(Stream first, Stream second) : SequentialWriteStream
{
    public override void Write(ReadOnlySpan<byte> buffer)
    {
        first.Write(buffer);
        second.Write(buffer);
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        await first.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
        await second.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Flush()
    {
        first.Flush();
        second.Flush();
    }

    public override async Task FlushAsync(CancellationToken cancellationToken)
    {
        await first.FlushAsync(cancellationToken).ConfigureAwait(false);
        await second.FlushAsync(cancellationToken).ConfigureAwait(false);
    }

}
