namespace KaDeploy;

/// <summary>
/// A failure the operator should read: the message is one line that names what was wrong
/// ("target /mnt/x is not empty (use --force)"), never a stack trace.
/// </summary>
public class KaDeployException : Exception
{
    public KaDeployException(string message) : base(message) { }
    public KaDeployException(string message, Exception inner) : base(message, inner) { }
}
