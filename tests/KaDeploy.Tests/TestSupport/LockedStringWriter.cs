namespace KaDeploy.Tests.TestSupport;

/// <summary>
/// A StringWriter that a server's threads can write while the test reads it: every write and every
/// <see cref="ToString"/> take one lock. <c>TextWriter.Synchronized(new StringWriter())</c> locks the writes only, so a
/// test reading the inner writer's text meanwhile reads a StringBuilder being appended to.
/// </summary>
public sealed class LockedStringWriter : StringWriter
{
    private readonly Lock _gate = new();

    public override void Write(char value) { lock (_gate) base.Write(value); }
    public override void Write(char[] buffer, int index, int count) { lock (_gate) base.Write(buffer, index, count); }
    public override void Write(ReadOnlySpan<char> buffer) { lock (_gate) base.Write(buffer); }
    public override void Write(string? value) { lock (_gate) base.Write(value); }
    public override void WriteLine(string? value) { lock (_gate) base.WriteLine(value); }
    public override void WriteLine(ReadOnlySpan<char> buffer) { lock (_gate) base.WriteLine(buffer); }
    public override string ToString() { lock (_gate) return base.ToString(); }
}
