using KaDeploy.Install;

namespace KaDeploy.Tests.Install;

public class NodeListTests
{
    [Fact]
    public void The_original_one_name_per_line_form_stays_valid()
    {
        var n = NodeList.Parse("node1\n# comment\n\nnode2   # trailing\n");
        Assert.Equal(new[] { "node1", "node2" }, n.Select(x => x.Name));
        Assert.Equal(new[] { 1, 2 }, n.Select(x => x.Index));
        Assert.All(n, x => Assert.Equal("", x.Address));
    }

    [Fact]
    public void Fields_are_recognised_by_their_form()
    {
        var n = NodeList.Parse("n1 52-54-00-AB-CD-EF 198.18.1.5/16 gateway=198.18.0.1 dns=198.18.0.1,198.18.0.2 rack=r3\nn2 dhcp 52:54:00:00:00:02\nn3 10.1.2.3")[0..];
        Assert.Equal("52:54:00:ab:cd:ef", n[0].Mac);
        Assert.Equal("198.18.1.5/16", n[0].Address);
        Assert.Equal("198.18.0.1", n[0].Gateway);
        Assert.Equal(new[] { "198.18.0.1", "198.18.0.2" }, n[0].Dns);
        Assert.Equal("r3", n[0].Vars["rack"]);
        Assert.Equal(("", "52:54:00:00:00:02"), (n[1].Address, n[1].Mac));
        Assert.Equal("10.1.2.3/24", n[2].Address);
    }

    [Theory]
    [InlineData("n1\nn1", "nodes:2: node n1 is listed twice")]
    [InlineData("bad_name", "nodes:1: 'bad_name' is not a valid host name")]
    [InlineData("n1 rubbish", "nodes:1: 'rubbish' is not a MAC, an address, 'dhcp' or key=value")]
    [InlineData("n1 10.0.0.1/40", "nodes:1: bad prefix in '10.0.0.1/40'")]
    [InlineData("n1 1-x=2", "nodes:1: '1-x' is not a valid variable name (letters, digits, _)")]
    [InlineData("n1 aa:bb:cc:dd:ee:ff\nn2 AA:BB:CC:DD:EE:FF", "nodes:2: MAC aa:bb:cc:dd:ee:ff is listed twice")]
    public void Errors_name_the_line(string text, string message) =>
        Assert.Equal(message, Assert.Throws<KaDeployException>(() => NodeList.Parse(text)).Message);

    [Fact]
    public void A_node_finds_itself_by_name_then_by_mac_and_a_stranger_is_refused()
    {
        var n = NodeList.Parse("a 52:54:00:00:00:01\nb 52:54:00:00:00:02");
        Assert.Equal("a", NodeList.Find(n, "a", []).Name);
        Assert.Equal("b", NodeList.Find(n, "whatever", ["52:54:00:00:00:02"]).Name);
        var e = Assert.Throws<KaDeployException>(() => NodeList.Find(n, "c", ["52:54:00:00:00:09"]));
        Assert.Equal("node 'c' (MAC 52:54:00:00:00:09) is not in the node list; nothing was written", e.Message);
    }

    [Fact]
    public void Hooks_get_the_documented_variables_and_every_key_value()
    {
        var node = NodeList.Parse("x\ny 198.18.1.7/24 rack=r9")[1];
        var env = NodeInstaller.HookEnvironment(new InstallManifest { Session = "lab" }, node, new TargetDisk("/dev/sdq", "sdq", 1));
        Assert.Equal("y", env["KA_NODE_NAME"]);
        Assert.Equal("198.18.1.7", env["KA_NODE_ADDRESS"]);
        Assert.Equal("24", env["KA_NODE_PREFIX"]);
        Assert.Equal("2", env["KA_NODE_INDEX"]);
        Assert.Equal("lab", env["KA_SESSION"]);
        Assert.Equal("r9", env["rack"]);
    }
}
