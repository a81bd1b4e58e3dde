global using Xunit;
global using KaDeploy.Verification;
