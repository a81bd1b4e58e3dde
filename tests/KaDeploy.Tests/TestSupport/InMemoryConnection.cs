using System.IO.Pipelines;

namespace KaDeploy.Tests.TestSupport;

/// <summary>
/// Two ends of an in-memory connection (a pipe each way), so protocol code that takes a
/// <see cref="Stream"/> is tested without sockets. Each end can record what it sent.
/// </summary>
public static class InMemoryConnection
{
    /// <summary>A connected pair: what <c>A</c> writes, <c>B</c> reads, and back.</summary>
    public static (End A, End B) Create()
    {
        var ab = new Pipe();
        var ba = new Pipe();
        return (new End(ba.Reader, ab.Writer), new End(ab.Reader, ba.Writer));
    }

    /// <summary>One end: reads what the peer wrote, records what it writes.</summary>
    public sealed class End(PipeReader reader, PipeWriter writer) : DuplexStream
    {
        private readonly Stream _in = reader.AsStream();
        private readonly Stream _out = writer.AsStream();
        private readonly MemoryStream _sent = new();

        /// <summary>Every byte this end wrote, in order.</summary>
        public byte[] Sent { get { lock (_sent) return _sent.ToArray(); } }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => _in.ReadAsync(buffer, cancellationToken);
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            lock (_sent) _sent.Write(buffer.Span);
            return _out.WriteAsync(buffer, cancellationToken);
        }
        public override Task FlushAsync(CancellationToken cancellationToken) => _out.FlushAsync(cancellationToken);

        /// <summary>Closes this end's sending side: the peer reads end of stream.</summary>
        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                writer.Complete();
                reader.Complete();
            }
            base.Dispose(disposing);
        }
    }
}
