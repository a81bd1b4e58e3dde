using System.Net;
using KaDeploy.Session;
using KaDeploy.Transport;

namespace KaDeploy.Tests.Session;

/// <summary>
/// A node's link to its parent has one shutdown path whatever its stage: an abort while linking stops the attempts
/// and closes the connection they made a moment later, with the abort's reason; an abort once linked closes the
/// connection. The first reason is the one kept (the node's log and verdict name it).
/// </summary>
public sealed class UpstreamLinkTests
{
    private static MemoryConnection NewConnection()
    {
        var ep = new IPEndPoint(IPAddress.Loopback, 40000);
        return new MemoryLink(ep, ep, 1024).OpenerSide;
    }

    [Fact]
    public void AnAbortWhileLinkingStopsTheAttemptsAndClosesTheConnectionMadeAfterWithItsReason()
    {
        using var link = new UpstreamLink(CancellationToken.None);
        link.Abort("re-attaching to node 7 on the server's word");
        // CancelAsync runs the callbacks on the pool; the token itself is cancelled at once.
        Assert.True(link.Attempts.IsCancellationRequested);

        var connection = NewConnection();
        Assert.False(link.Linked(connection));
        Assert.True(connection.IsAborted);
        Assert.Equal("re-attaching to node 7 on the server's word", connection.AbortReason);
    }

    [Fact]
    public void AnAbortOnceLinkedClosesTheConnectionAndTheFirstReasonIsKept()
    {
        using var link = new UpstreamLink(CancellationToken.None);
        var connection = NewConnection();
        Assert.True(link.Linked(connection));
        Assert.Same(connection, link.Connection);
        Assert.False(connection.IsAborted);
        Assert.False(link.Attempts.IsCancellationRequested);

        link.Abort("server 127.0.0.1:1 lost");
        link.Abort("node done");
        Assert.True(connection.IsAborted);
        Assert.Equal("server 127.0.0.1:1 lost", connection.AbortReason);
        Assert.Equal("server 127.0.0.1:1 lost", link.AbortReason);
    }

    [Fact]
    public void TheNodesRunEndingEndsTheAttempts()
    {
        using var run = new CancellationTokenSource();
        using var link = new UpstreamLink(run.Token);
        run.Cancel();
        Assert.True(link.Attempts.IsCancellationRequested);
        Assert.Null(link.AbortReason);
    }
}
