using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Composition;
using PeftSharp.Tuners;
using PeftSharp.Peft;
using PeftSharp.Tuners.Prompts;

namespace PeftSharp.Cli.Training.Methods;

/// <summary>Options shared by the three soft-prompt methods (one static instance, so each flag is added once).</summary>
internal static class PromptOptions
{
    public static readonly Option<int> VirtualTokens = new("--num-virtual-tokens") { Description = "soft prompts: num_virtual_tokens", DefaultValueFactory = _ => 20 };
    public static readonly Option<string?> InitText = new("--prompt-init-text") { Description = "prompt tuning, MPT: prompt_tuning_init_text (with prompt_tuning_init TEXT; tokenized with the model's tokenizer)" };
    public static readonly Option<int?> EncoderHidden = new("--encoder-hidden-size") { Description = "P-tuning / prefix projection: encoder_hidden_size (default: token_dim)" };
}

/// <summary><c>--method prompt-tuning</c>: PEFT's prompt tuning (docs/prompts.md).</summary>
public sealed class PromptTuningMethod : TrainMethod
{
    readonly Option<string> init = new("--prompt-init") { Description = "prompt tuning: prompt_tuning_init RANDOM, TEXT or SAMPLE_VOCAB", DefaultValueFactory = _ => PromptTuningInit.Random };

    readonly Option<string?> initFrom = new("--init-from-prompt") { Description = "prompt tuning: start from this soft-prompt adapter folder's prompt (SPoT transfer; same num_virtual_tokens)" };

    public override string Name => "prompt-tuning";
    public override IReadOnlyList<Option> Options => [PromptOptions.VirtualTokens, init, PromptOptions.InitText, initFrom];

    public override MethodHooks Attach(PeftModel peft, string adapter, PeftConfig config, TrainSettings s, SharedMethodOptions o, ulong seed)
    {
        if (s.Get(initFrom) is string dir)
        {
            if (!Directory.Exists(dir)) throw new PeftSharpException($"--init-from-prompt {dir}: folder not found");
            var prompt = peft.Get<PromptTuningModel>()!.Module(adapter).EmbeddingWeight;
            try { PromptTransfer.InitFromPrompt(prompt, dir); }
            catch (PeftSharpException e) { throw new PeftSharpException($"--init-from-prompt {e.Message}"); }
            Console.Error.WriteLine($"prompt initialised from {dir} (SPoT)");
        }
        return new();
    }

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o) => new PromptTuningConfig
    {
        NumVirtualTokens = s.Get(PromptOptions.VirtualTokens),
        PromptTuningInitMode = s.Get(init).ToUpperInvariant(),
        PromptTuningInitText = s.Get(PromptOptions.InitText),
    };
}

/// <summary><c>--method p-tuning</c>: PEFT's P-tuning prompt encoder (docs/prompts.md).</summary>
public sealed class PTuningMethod : TrainMethod
{
    readonly Option<string> type = new("--encoder-type") { Description = "P-tuning: encoder_reparameterization_type MLP or LSTM", DefaultValueFactory = _ => "MLP" };
    readonly Option<int> layers = new("--encoder-num-layers") { Description = "P-tuning: encoder_num_layers (LSTM)", DefaultValueFactory = _ => 2 };

    public override string Name => "p-tuning";
    public override IReadOnlyList<Option> Options => [PromptOptions.VirtualTokens, PromptOptions.EncoderHidden, type, layers];

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o) => new PromptEncoderConfig
    {
        NumVirtualTokens = s.Get(PromptOptions.VirtualTokens),
        EncoderHiddenSize = s.Get(PromptOptions.EncoderHidden),
        EncoderReparameterizationType = s.Get(type).ToUpperInvariant(),
        EncoderNumLayers = s.Get(layers),
    };
}

/// <summary><c>--method prefix-tuning</c>: PEFT's prefix tuning / P-tuning v2 (docs/prompts.md).</summary>
public sealed class PrefixTuningMethod : TrainMethod
{
    readonly Option<bool> projection = new("--prefix-projection") { Description = "prefix tuning: prefix_projection (train the prefixes through a tanh MLP)" };

    public override string Name => "prefix-tuning";
    public override IReadOnlyList<Option> Options => [PromptOptions.VirtualTokens, PromptOptions.EncoderHidden, projection];

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o) => new PrefixTuningConfig
    {
        NumVirtualTokens = s.Get(PromptOptions.VirtualTokens),
        EncoderHiddenSize = s.Get(PromptOptions.EncoderHidden),
        PrefixProjection = s.Get(projection),
    };
}
