using System.Net;
using KaDeploy.Netboot;

namespace KaDeploy.Tests.Netboot;

public class NodeListTests
{
    [Fact]
    public void ReadsNamesMacsAddressesAndSettings()
    {
        var nodes = NodeList.Parse("""
            # name  mac                address
            node1   52:54:00:AA:00:01
            node2   52-54-00-aa-00-02  198.18.0.12  rack=3 role=compute   # trailing comment

            """, "nodes");
        Assert.Equal(2, nodes.Count);
        Assert.Equal("52:54:00:aa:00:01", nodes[0].Mac);
        Assert.Null(nodes[0].Address);
        Assert.Equal("52:54:00:aa:00:02", nodes[1].Mac);
        Assert.Equal("52-54-00-aa-00-02", nodes[1].MacHyphens);
        Assert.Equal(IPAddress.Parse("198.18.0.12"), nodes[1].Address);
        Assert.Equal([new("rack", "3"), new("role", "compute")], nodes[1].Settings);
    }

    [Theory]
    [InlineData("a 52:54:00:00:00:01\nb 52:54:00:00:00:01\n", "nodes:2: duplicate MAC 52:54:00:00:00:01 (also on line 1)")]
    [InlineData("a 52:54:00:00:00:01\nb 52-54-00-00-00-01\n", "nodes:2: duplicate MAC 52:54:00:00:00:01 (also on line 1)")]
    [InlineData("a 52:54:00:00:00:01\nA 52:54:00:00:00:02\n", "nodes:2: duplicate name A (also on line 1)")]
    [InlineData("a 52:54:00:00:00:01 198.18.0.5\nb 52:54:00:00:00:02 198.18.0.5\n", "nodes:2: duplicate address 198.18.0.5 (also on line 1)")]
    [InlineData("a\n", "nodes:1: a has no MAC address (network boot finds nodes by MAC)")]
    [InlineData("a 52:54:00:00:00:01 52:54:00:00:00:02\n", "nodes:1: two MAC addresses for a")]
    [InlineData("a 52:54:00:00:0:01\n", "nodes:1: '52:54:00:00:0:01' is neither a MAC address, an IPv4 address nor key=value")]
    [InlineData("bad_name 52:54:00:00:00:01\n", "nodes:1: 'bad_name' is not a valid host name")]
    [InlineData("# only a comment\n", "nodes: no nodes")]
    public void RefusesBadLists(string text, string message)
    {
        var e = Assert.Throws<KaDeployException>(() => NodeList.Parse(text, "nodes"));
        Assert.Equal(message, e.Message);
    }
}
