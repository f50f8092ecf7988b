using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static PeftSharp.Tests.Tuners.LoraTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners;

/// <summary>PiSSA and OLoRA rewrite the base weight so that W_res + s·B·A = W at the start.</summary>
public class InitVariantTests
{
    static (CausalLM Model, Tensor Original) Build(int seed)
    {
        var config = ModelConfig.FromJson("""{"model_type":"llama","vocab_size":12,"hidden_size":24,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":2}""");
        var model = ModelLoader.Create(config);
        model.InitializeWeights(seed);
        var original = ((LlamaForCausalLM)model).model.layers[0].self_attn.q_proj.weight.detach().clone();
        return (model, original);
    }

    [Fact]
    public void PissaKeepsTheProductAndPutsTheTopSingularDirectionsInTheAdapter()
    {
        var (model, w) = Build(61);
        using var _ = model;
        var lora = LoraModel.Create(model, new LoraConfig { R = 4, LoraAlpha = 8, InitLoraWeights = InitLoraWeights.Pissa });
        var layer = lora.LinearLayers["model.layers.0.self_attn.q_proj"];
        var delta = layer.DeltaWeight("default");
        Assert.True(layer.Host.weight.add(delta).allclose(w, atol: 1e-5));
        // The residual's singular values are W's from the 5th on; the adapter's are W's first four.
        var sw = linalg.svdvals(w);
        var sres = linalg.svdvals(layer.Host.weight.detach());
        var sdelta = linalg.svdvals(delta);
        Assert.True(sres.narrow(0, 0, 20).allclose(sw.narrow(0, 4, 20), atol: 1e-4));
        Assert.True(sdelta.narrow(0, 0, 4).allclose(sw.narrow(0, 0, 4), atol: 1e-4));
        // A and B share the singular values evenly: ‖A row k‖ = ‖B column k‖ = √(σ_k / s).
        var a = layer.A("default").weight.detach();
        Assert.True(linalg.vector_norm(a, dims: [1]).allclose(sw.narrow(0, 0, 4).div(2.0).sqrt(), atol: 1e-4));
    }

    [Fact]
    public void OloraUsesOrthonormalQAndKeepsTheProduct()
    {
        var (model, w) = Build(62);
        using var _ = model;
        var lora = LoraModel.Create(model, new LoraConfig { R = 3, LoraAlpha = 6, InitLoraWeights = InitLoraWeights.Olora });
        var layer = lora.LinearLayers["model.layers.0.self_attn.q_proj"];
        Assert.True(layer.Host.weight.add(layer.DeltaWeight("default")).allclose(w, atol: 1e-5));
        var b = layer.B("default").weight.detach();
        Assert.True(b.t().matmul(b).allclose(eye(3), atol: 1e-5));
        // A is upper-triangular in its first columns (R of a QR decomposition).
        var a = Values(layer.A("default").weight);
        Assert.Equal(0f, a[1 * 24 + 0], 5);
        Assert.Equal(0f, a[2 * 24 + 1], 5);
    }
}
