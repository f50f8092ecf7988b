namespace PeftSharp.Tests;

public class SmokeTests
{
    [Fact]
    public void TorchSharpLoads()
    {
        using var a = TorchSharp.torch.ones(2, 2);
        Assert.Equal(4f, a.sum().item<float>());
    }
}
