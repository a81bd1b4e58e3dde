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
    [InlineData("a 52:54:00:00:00:01\nb 52:54:00:00:00:01\n", "nodes:2: MAC 52:54:00:00:00:01 is listed twice")]
    [InlineData("a 52:54:00:00:00:01\nb 52-54-00-00-00-01\n", "nodes:2: MAC 52:54:00:00:00:01 is listed twice")]
    [InlineData("a 52:54:00:00:00:01\na 52:54:00:00:00:02\n", "nodes:2: node a is listed twice")]
    [InlineData("a 52:54:00:00:00:01 198.18.0.5\nb 52:54:00:00:00:02 198.18.0.5\n", "nodes:2: address 198.18.0.5 of b is also a's")]
    [InlineData("a\n", "nodes:1: a has no MAC address (network boot finds nodes by MAC)")]
    [InlineData("a 52:54:00:00:00:01 52:54:00:00:00:02\n", "nodes:1: two MAC addresses")]
    [InlineData("a 52:54:00:00:0:01\n", "nodes:1: '52:54:00:00:0:01' is not a MAC, an address, 'dhcp' or key=value")]
    [InlineData("bad_name 52:54:00:00:00:01\n", "nodes:1: 'bad_name' is not a valid host name")]
    [InlineData("# only a comment\n", "nodes: no nodes")]
    public void RefusesBadLists(string text, string message)
    {
        var e = Assert.Throws<KaDeployException>(() => NodeList.Parse(text, "nodes"));
        Assert.Equal(message, e.Message);
    }

    [Fact]
    public void SameFileAsTheInstallNodeList()
    {
        // The server's --nodes file for the whole-node install, with a prefix, gateway and dns: read as is.
        var nodes = NodeList.Parse("node1 52:54:00:00:00:01 198.18.1.2/24 gateway=198.18.1.1 dns=198.18.1.1\nnode2 52:54:00:00:00:02 dhcp\n", "nodes");
        Assert.Equal(IPAddress.Parse("198.18.1.2"), nodes[0].Address);
        Assert.Null(nodes[1].Address);
        Assert.Contains(new KeyValuePair<string, string>("gateway", "198.18.1.1"), nodes[0].Settings);
    }
}
