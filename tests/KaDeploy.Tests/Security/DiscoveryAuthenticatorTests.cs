using KaDeploy.Security;

namespace KaDeploy.Tests.Security;

public class DiscoveryAuthenticatorTests
{
    [Fact]
    public void Only_the_key_holder_answering_this_request_for_this_session_and_port_verifies()
    {
        using var key = PresharedKey.Generate();
        using var rogue = PresharedKey.Generate();
        var nonce = DiscoveryAuthenticator.NewNonce();
        var tag = new byte[DiscoveryAuthenticator.TagSize];
        DiscoveryAuthenticator.ComputeTag(key, nonce, "lab", 30765, tag);
        Assert.True(DiscoveryAuthenticator.Verify(key, nonce, "lab", 30765, tag));

        var forged = new byte[DiscoveryAuthenticator.TagSize];
        DiscoveryAuthenticator.ComputeTag(rogue, nonce, "lab", 30765, forged);
        Assert.False(DiscoveryAuthenticator.Verify(key, nonce, "lab", 30765, forged));          // rogue server
        Assert.False(DiscoveryAuthenticator.Verify(key, DiscoveryAuthenticator.NewNonce(), "lab", 30765, tag)); // replayed answer
        Assert.False(DiscoveryAuthenticator.Verify(key, nonce, "lab", 31000, tag));           // port redirected
        Assert.False(DiscoveryAuthenticator.Verify(key, nonce, "other", 30765, tag));         // another session
        Assert.False(DiscoveryAuthenticator.Verify(key, nonce, "lab", 30765, tag.AsSpan(1))); // cut
    }
}
