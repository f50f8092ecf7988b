using System.CommandLine;
using System.Diagnostics;
using PeftSharp.Benchmarks;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench infer</c>: prefill and per-token decode latency of the base model, the same model with an
/// unmerged LoRA adapter, and with the adapter merged, measured interleaved in one run (medians, then ratios).
/// </summary>
public static class BenchInferCommand
{
    public static Command Create()
    {
        var config = BenchCommand.ConfigOption();
        var dtype = CliOptions.DType();
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 1, Description = "sequences per forward" }.AtLeast(1);
        var promptLen = new Option<int>("--prompt-len") { DefaultValueFactory = _ => 128, Description = "prompt tokens (prefill)" }.AtLeast(1);
        var newTokens = new Option<int>("--new-tokens") { DefaultValueFactory = _ => 32, Description = "decoded tokens per repeat" }.AtLeast(1);
        var rank = new Option<int>("--r") { DefaultValueFactory = _ => 8, Description = "LoRA rank" }.AtLeast(1);
        var target = new Option<string?>("--target") { Description = "comma-separated target modules (default: PEFT's for the model type)" };
        var repeats = new Option<int>("--repeats") { DefaultValueFactory = _ => 5, Description = "interleaved repeats per variant" }.AtLeast(1);
        var json = CliOptions.Json();
        var command = new Command("infer", "latency: base vs unmerged LoRA vs merged LoRA") { config, dtype, batch, promptLen, newTokens, rank, target, repeats, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(config)!, parse.GetValue(dtype)!, parse.GetValue(batch), parse.GetValue(promptLen),
            parse.GetValue(newTokens), parse.GetValue(rank), parse.GetValue(target), parse.GetValue(repeats), parse.GetValue(json))));
        return command;
    }

    static int Run(string configPath, string dtypeName, int batch, int promptLen, int newTokens, int r, string? target, int repeats, bool json)
    {
        var dtype = CliOptions.ParseDType(dtypeName);
        var config = ModelConfig.Load(configPath);
        if (promptLen + newTokens > config.ContextLength)
            throw new PeftSharpException($"--prompt-len + --new-tokens ({promptLen + newTokens}) exceeds the model's context ({config.ContextLength})");
        using var model = ModelLoader.Create(config, dtype);
        model.InitializeWeights(0);
        model.eval();
        var loraConfig = new LoraConfig { R = r, LoraAlpha = 2 * r, InitLoraWeights = InitLoraWeights.False };
        if (target is not null) loraConfig.TargetModules = CliOptions.ParseTargets(target);
        var lora = LoraModel.Create(model, loraConfig, seed: 1);
        int threads = get_num_threads();
        Console.Error.WriteLine($"bench infer: {config.ModelType}, {ModelLoader.DTypeName(dtype)}, batch {batch}, prompt {promptLen}, {newTokens} new tokens, LoRA r={r} on {lora.LinearLayers.Count} layers, {threads} threads");

        var prompt = randint(0, config.VocabSize, [batch, promptLen], dtype: ScalarType.Int64);
        var variants = new[] { "base", "unmerged", "merged" };
        var prefill = variants.ToDictionary(v => v, _ => new List<double>());
        var decode = variants.ToDictionary(v => v, _ => new List<double>());
        using var _ = no_grad();
        for (int rep = 0; rep <= repeats; rep++) // rep 0 warms up
            foreach (var variant in variants)
            {
                IDisposable? disabled = variant == "base" ? lora.DisableAdapters() : null;
                if (variant == "merged") lora.Merge();
                var (p, d) = Measure(model, prompt, newTokens);
                if (variant == "merged") lora.Unmerge();
                disabled?.Dispose();
                if (rep == 0) continue;
                prefill[variant].Add(p);
                decode[variant].Add(d);
                Console.Error.WriteLine($"  {variant,-8} prefill {p * 1e3,8:F1} ms   decode {d * 1e3,7:F2} ms/token");
            }
        var pm = variants.ToDictionary(v => v, v => BenchCommand.Median(prefill[v]));
        var dm = variants.ToDictionary(v => v, v => BenchCommand.Median(decode[v]));
        Console.WriteLine($"prefill ms: base {pm["base"] * 1e3:F1}, unmerged {pm["unmerged"] * 1e3:F1} ({pm["unmerged"] / pm["base"]:F3}x), merged {pm["merged"] * 1e3:F1} ({pm["merged"] / pm["base"]:F3}x)");
        Console.WriteLine($"decode ms/token: base {dm["base"] * 1e3:F2}, unmerged {dm["unmerged"] * 1e3:F2} ({dm["unmerged"] / dm["base"]:F3}x), merged {dm["merged"] * 1e3:F2} ({dm["merged"] / dm["base"]:F3}x)");
        if (json)
            JsonOutput.Write(new
            {
                prefill_ms = pm.ToDictionary(kv => kv.Key, kv => kv.Value * 1e3),
                decode_ms_per_token = dm.ToDictionary(kv => kv.Key, kv => kv.Value * 1e3),
                unmerged_over_base = dm["unmerged"] / dm["base"],
                merged_over_base = dm["merged"] / dm["base"],
                prefill_unmerged_over_base = pm["unmerged"] / pm["base"],
                prefill_merged_over_base = pm["merged"] / pm["base"],
                peak_rss_bytes = ResourceUsage.PeakRssBytes(),
            });
        return 0;
    }

    /// <summary>(prefill seconds, decode seconds per token) with a KV cache, greedy.</summary>
    internal static (double Prefill, double Decode) Measure(CausalLM model, Tensor prompt, int newTokens)
    {
        using var cache = model.NewCache();
        var clock = Stopwatch.StartNew();
        Tensor next;
        using (var scope = NewDisposeScope())
        {
            var hidden = model.Hidden(prompt, cache);
            next = model.Logits(hidden.narrow(1, hidden.shape[1] - 1, 1)).argmax(-1).MoveToOuterDisposeScope();
        }
        double prefill = clock.Elapsed.TotalSeconds;
        clock.Restart();
        for (int i = 0; i < newTokens; i++)
        {
            using var scope = NewDisposeScope();
            var hidden = model.Hidden(next, cache);
            var token = model.Logits(hidden).argmax(-1).MoveToOuterDisposeScope();
            next.Dispose();
            next = token;
        }
        next.Dispose();
        return (prefill, clock.Elapsed.TotalSeconds / newTokens);
    }
}
