using PeftSharp.Models;
using PeftSharp.Tokenization;
using static TorchSharp.torch;

namespace PeftSharp.Inference;

public sealed record GenerationOptions(int MaxNewTokens = 64, double Temperature = 0.0, double TopP = 1.0, int Seed = 0);

/// <summary>
/// Autoregressive generation with a KV cache: the prompt is run once, then one token per step.
/// Text is streamed as it becomes printable (byte-level tokens can split a UTF-8 character).
/// </summary>
public sealed class TextGenerator(CausalLM model, ModelTokenizer tokenizer)
{
    public IReadOnlyList<int> Generate(string prompt, GenerationOptions options, Action<string>? onText = null)
    {
        var promptIds = tokenizer.Encode(prompt, addSpecialTokens: true);
        if (promptIds.Count == 0)
            throw new PeftSharpException("--prompt: the prompt encodes to no tokens; give some text");
        return Generate(promptIds, options, onText);
    }

    public IReadOnlyList<int> Generate(IReadOnlyList<int> promptIds, GenerationOptions options, Action<string>? onText = null)
    {
        var stop = new HashSet<int>(model.Config.EosTokenIds);
        if (tokenizer.EosTokenId is int eos) stop.Add(eos);
        var sampler = new Sampler(options.Temperature, options.TopP, options.Seed);
        var generated = new List<int>();
        // Prefixes and virtual tokens (soft prompts) take context positions in front of the prompt.
        int limit = model.TokenContext, leading = model.Extensions.LeadingPositions;
        if (promptIds.Count >= limit)
            throw new PeftSharpException(leading == 0
                ? $"--prompt: {promptIds.Count} tokens leave no room in the model's context of {limit}"
                : $"--prompt: {promptIds.Count} tokens leave no room in the model's context of {model.Config.ContextLength} less the adapter's {leading} virtual/prefix positions");
        string emitted = "";
        using var cache = model.NewCache();
        using var _ = no_grad();
        var input = promptIds.Select(i => (long)i).ToArray();
        for (int step = 0; step < options.MaxNewTokens && promptIds.Count + generated.Count < limit; step++)
        {
            int next;
            using (var scope = NewDisposeScope())
            {
                var ids = tensor(input, device: model.Device).unsqueeze(0);
                var hidden = model.Hidden(ids, cache);
                var last = hidden[0, -1];
                var logits = model.Logits(last).to_type(ScalarType.Float32).cpu();
                next = sampler.Next(logits.data<float>().ToArray());
            }
            if (stop.Contains(next)) break;
            generated.Add(next);
            input = [next];
            if (onText is not null)
            {
                string text = tokenizer.Decode(generated, skipSpecialTokens: true);
                // Hold back a trailing partial UTF-8 character until its remaining bytes arrive.
                if (text.Length > emitted.Length && !text.EndsWith('\uFFFD') && text.StartsWith(emitted, StringComparison.Ordinal))
                {
                    onText(text[emitted.Length..]);
                    emitted = text;
                }
            }
        }
        if (onText is not null)
        {
            string final = tokenizer.Decode(generated, skipSpecialTokens: true);
            if (final.Length > emitted.Length && final.StartsWith(emitted, StringComparison.Ordinal)) onText(final[emitted.Length..]);
        }
        return generated;
    }
}
