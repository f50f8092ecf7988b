using PeftSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Tuners.Mixtures.MixLora;

/// <summary>
/// MixLoRA's plain LoRA on one attention projection (the reference code's <c>LoraLinear</c> on self_attn):
/// <c>y = base(x) + B·A·dropout(x)·alpha/r</c>, held as a one-expert <see cref="LoraExperts"/> under the host layer
/// (<c>…q_proj.mixlora_{adapter}.lora_A</c> [1, r, in]).
/// </summary>
public sealed class MixLoraAttentionLora : ILayerTuner, IMixtureComponent
{
    readonly string moduleName;
    readonly string path;

    /// <summary>Attaches a LoRA of adapter <paramref name="adapter"/> to the attention projection <paramref name="host"/> at <paramref name="path"/>.</summary>
    public MixLoraAttentionLora(Linear host, string path, string adapter, MixLoraConfig config, Generator? generator)
    {
        Host = host;
        Adapter = adapter;
        this.path = path;
        moduleName = $"mixlora_{adapter}";
        Lora = new LoraExperts(1, config.R, host.InFeatures, host.OutFeatures, config.ScalingFor(config.R, config.LoraAlpha),
            config.LoraDropout, config.LoraInit == "gaussian", host.weight.device, generator);
        host.register_module(moduleName, Lora);
        host.AddTuner(this);
    }

    /// <summary>The adapted projection.</summary>
    public Linear Host { get; }
    /// <summary>The LoRA (one expert).</summary>
    public LoraExperts Lora { get; }
    /// <inheritdoc/>
    public string Adapter { get; }
    /// <inheritdoc/>
    public bool Active { get; set; }
    /// <inheritdoc/>
    public bool Disabled { get; set; }

    /// <inheritdoc/>
    public Tensor Forward(Tensor input)
    {
        if (!Active || Disabled) return Host.BaseForward(input);
        using var scope = NewDisposeScope();
        var y = Host.BaseForward(input);
        var delta = Lora.GroupedDelta(input.reshape(-1, input.shape[^1]), [input.numel() / input.shape[^1]], Host.training);
        return y.add(delta.reshape(y.shape).to_type(y.dtype)).MoveToOuterDisposeScope();
    }

    /// <inheritdoc/>
    public IEnumerable<(string Name, Parameter Param)> NamedParameters()
    {
        yield return ($"{path}.{moduleName}.lora_A", Lora.lora_A);
        yield return ($"{path}.{moduleName}.lora_B", Lora.lora_B);
    }

    /// <inheritdoc/>
    public void Detach()
    {
        Host.RemoveTuner(this);
        Host.RemoveSubmodule(moduleName);
        Lora.Dispose();
    }
}
