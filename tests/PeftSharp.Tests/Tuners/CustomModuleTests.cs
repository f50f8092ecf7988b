using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using TorchSharp;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tests.Tuners;

/// <summary>LoRA on a user's own TorchSharp module tree built from PeftSharp's layers (the documented route).</summary>
public class CustomModuleTests
{
    sealed class TwoLayerNet : nn.Module<Tensor, Tensor>
    {
        public Linear encoder = new(6, 5, hasBias: true);
        public Linear head = new(5, 3, hasBias: false);
        public TwoLayerNet() : base(nameof(TwoLayerNet))
        {
            RegisterComponents();
            using var _ = no_grad();
            foreach (var p in parameters()) p.copy_(randn(p.shape, generator: new Generator(7)));
        }
        public override Tensor forward(Tensor x) => head.forward(nn.functional.relu(encoder.forward(x)));
    }

    [Fact]
    public void LoraAttachesByFieldPathAndMatchesHandComputedOutput()
    {
        using var net = new TwoLayerNet();
        var x = randn(4, 6, generator: new Generator(8));
        var lora = LoraModel.Create(net, null, new LoraConfig { R = 2, LoraAlpha = 4, TargetModules = TargetModules.FromNames("encoder"), InitLoraWeights = InitLoraWeights.False }, seed: 9);
        var layer = lora.LinearLayers["encoder"];
        // By hand: relu(x·(W + 2·B·A)ᵀ + b)·Hᵀ.
        var w = net.encoder.weight.detach().add(layer.B("default").weight.detach().matmul(layer.A("default").weight.detach()).mul(2.0));
        var expected = nn.functional.relu(x.matmul(w.t()).add(net.encoder.bias!.detach())).matmul(net.head.weight.detach().t());
        using (no_grad()) Assert.True(net.forward(x).allclose(expected, atol: 1e-5));
        Assert.Equal(["encoder.lora_A.default.weight", "encoder.lora_B.default.weight"], lora.TrainableParameters().Select(p => p.Name));
        var e = Assert.Throws<PeftSharpException>(() => LoraModel.Create(new TwoLayerNet(), null, new LoraConfig()));
        Assert.Contains("target_modules", e.Message);
    }
}
