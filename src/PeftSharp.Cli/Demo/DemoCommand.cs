using System.CommandLine;
using System.Diagnostics;
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Demo;

/// <summary>
/// <c>peftsharp demo</c>: the whole story on a laptop-sized example. Trains (once) a small base model on Tiny
/// Shakespeare, then two LoRA adapters for two distinct tasks on held-out text — writing in UPPERCASE and in lowercase —
/// switches between them at runtime, shows before/after perplexities and samples, checks merged = unmerged,
/// and writes a markdown report with the loss curves.
/// </summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var outDir = new Option<string>("--out") { Description = "folder for the report, plot and adapters", DefaultValueFactory = _ => Path.Combine("runs", "demo") };
        var cache = new Option<string>("--cache") { Description = "folder where the trained base model is kept between runs", DefaultValueFactory = _ => Path.Combine(".cache", "demo") };
        var scale = new Option<string>("--scale") { Description = "full (default, a few minutes) or tiny (seconds, for smoke tests)", DefaultValueFactory = _ => "full" };
        var seed = new Option<int>("--seed") { Description = "random seed", DefaultValueFactory = _ => 1234 }.AtLeast(0);
        var json = CliOptions.Json();
        var command = new Command("demo", "train a small base model on Tiny Shakespeare, then show what LoRA adapters do") { outDir, cache, scale, seed, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(outDir)!, parse.GetValue(cache)!, DemoScale.Parse(parse.GetValue(scale)!), (ulong)parse.GetValue(seed), parse.GetValue(json))));
        return command;
    }

    const string Prompt = "ROMEO:\n";

    /// <summary>Largest |merged − unmerged| logit for the active adapters, and the largest logit.</summary>
    static (double Diff, double Scale) MergeCheck(CausalLM model, LoraModel lora, Tensor ids)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var unmerged = model.Forward(ids).to_type(ScalarType.Float32);
        lora.Merge(safe: true);
        var merged = model.Forward(ids).to_type(ScalarType.Float32);
        lora.Unmerge();
        return (merged.sub(unmerged).abs().max().item<float>(), unmerged.abs().max().item<float>());
    }

    static int Run(string outDir, string cacheDir, DemoScale scale, ulong seed, bool json)
    {
        var clock = Stopwatch.StartNew();
        Directory.CreateDirectory(outDir);
        var corpus = DemoCorpus.Load();
        var baseModel = DemoBaseModel.EnsureTrained(cacheDir, corpus, scale, seed);
        var tokenizer = ModelTokenizer.Load(baseModel.Folder);
        using var model = ModelLoader.Load(baseModel.Folder, ScalarType.BFloat16);
        var report = new DemoReport { Scale = scale, BaseModel = baseModel, ModelConfig = model.Config };

        string heldOutEval = corpus.HeldOutValidation[..Math.Min(scale.EvalChars, corpus.HeldOutValidation.Length)];
        string shoutEval = corpus.ShoutValidation[..Math.Min(scale.EvalChars, corpus.ShoutValidation.Length)];
        string whisperEval = corpus.WhisperValidation[..Math.Min(scale.EvalChars, corpus.WhisperValidation.Length)];
        double Ppl(string text) => Scoring.MeanNll(model, tokenizer.Encode(text)).Perplexity;
        string Sample() => tokenizer.Decode(new TextGenerator(model, tokenizer).Generate(Prompt,
            new GenerationOptions(scale.SampleTokens, Temperature: 0.8, TopP: 0.95, Seed: (int)seed)), skipSpecialTokens: true);

        Console.Error.WriteLine("Scoring the base model...");
        report.BaseHeldOutPpl = Ppl(heldOutEval);
        report.BaseShoutPpl = Ppl(shoutEval);
        report.BaseWhisperPpl = Ppl(whisperEval);
        report.BaseSample = Sample();

        // Two adapters on one base: same LoRA settings, different data.
        var loraConfig = () => new LoraConfig { R = scale.Rank, LoraAlpha = 2 * scale.Rank, LoraDropout = 0.05, TargetModules = TargetModules.AllLinear };
        var lora = LoraModel.Create(model, loraConfig(), "whisper", seed: (long)seed);
        report.ParameterLine = lora.ParameterReport();
        (report.TrainableParams, report.AllParams) = lora.CountParameters();
        model.train();
        Console.Error.WriteLine("Training LoRA adapter \"whisper\" on the held-out plays in lowercase...");
        report.WhisperTraining = DemoTraining.Run("adapter whisper", model, lora.TrainableParameters(), tokenizer,
            corpus.WhisperTrain, whisperEval, scale.Context, scale.AdapterSteps, scale.AdapterBudget, scale.AdapterBatch, 2e-3, seed);
        lora.AddAdapter("shout", loraConfig(), seed: (long)seed + 1);
        lora.SetAdapter("shout");
        Console.Error.WriteLine("Training LoRA adapter \"shout\" on UPPERCASE text...");
        report.ShoutTraining = DemoTraining.Run("adapter shout", model, lora.TrainableParameters(), tokenizer,
            corpus.ShoutTrain, shoutEval, scale.Context, scale.AdapterSteps, scale.AdapterBudget, scale.AdapterBatch, 2e-3, seed);
        model.eval();

        string adapters = Path.Combine(outDir, "adapters");
        AdapterFiles.Save(lora, adapters, "whisper", baseModel.Folder);
        AdapterFiles.Save(lora, adapters, "shout", baseModel.Folder);
        report.AdapterBytes = new FileInfo(Path.Combine(adapters, "whisper", AdapterFiles.WeightsFileName)).Length;
        report.BaseBytes = new FileInfo(Path.Combine(baseModel.Folder, "model.safetensors")).Length;

        Console.Error.WriteLine("Switching adapters at runtime...");
        lora.SetAdapter("whisper");
        report.WhisperPpl = Ppl(whisperEval);
        report.WhisperOnShoutPpl = Ppl(shoutEval);
        report.WhisperOnHeldOutPpl = Ppl(heldOutEval);
        report.WhisperSample = Sample();
        lora.SetAdapter("shout");
        report.ShoutPpl = Ppl(shoutEval);
        report.ShoutOnWhisperPpl = Ppl(whisperEval);
        report.ShoutOnHeldOutPpl = Ppl(heldOutEval);
        report.ShoutSample = Sample();
        using (lora.DisableAdapters()) report.DisabledHeldOutPpl = Ppl(heldOutEval);

        // Merged weights must give what the unmerged adapter gives: exactly so in float32 (checked on a float32 copy
        // loaded from the saved files); in bfloat16 the merged weights are rounded once more.
        var ids = tensor(tokenizer.Encode(heldOutEval).Take(scale.Context).Select(i => (long)i).ToArray()).unsqueeze(0);
        (report.MergedMaxAbsDiff, report.LogitScale) = MergeCheck(model, lora, ids);
        using (var model32 = ModelLoader.Load(baseModel.Folder, ScalarType.Float32))
        {
            var lora32 = AdapterFiles.Load(model32, Path.Combine(adapters, "shout"), "shout");
            (report.MergedMaxAbsDiff32, _) = MergeCheck(model32, lora32, ids);
        }

        report.Seconds = clock.Elapsed.TotalSeconds;
        string reportPath = report.Write(outDir);
        Console.WriteLine(report.Summary());
        Console.WriteLine($"report: {reportPath}");
        if (json) JsonOutput.Write(report.Json(reportPath));
        return 0;
    }
}
