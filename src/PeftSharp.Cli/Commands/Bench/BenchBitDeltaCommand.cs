using System.CommandLine;
using PeftSharp.Cli.Demo;
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Quantization.BitDelta;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands.Bench;

/// <summary>
/// <c>peftsharp bench bitdelta</c>: BitDelta on a real pair made here. The demo's base model is fully fine-tuned on a
/// task it cannot do (the held-out plays in lowercase), then compressed against the base; held-out NLL of the base,
/// the fine-tuned model, BitDelta with scales at mean |Δ| and after distillation, and the bytes of each delta.
/// </summary>
public static class BenchBitDeltaCommand
{
    public static Command Create()
    {
        var steps = new Option<int>("--steps") { Description = "full fine-tuning steps", DefaultValueFactory = _ => 60 };
        var distillSteps = new Option<int>("--distill-steps") { Description = "scale distillation steps", DefaultValueFactory = _ => 50 };
        var cache = new Option<string>("--cache") { Description = "where the demo's base model is (trained there if missing)", DefaultValueFactory = _ => Path.Combine(".cache", "demo") };
        var outDir = new Option<string>("--out") { Description = "folder for the fine-tuned model, the delta and the table", DefaultValueFactory = _ => Path.Combine("runs", "bench-bitdelta") };
        var scale = new Option<string>("--scale") { Description = "full (default) or tiny (a smoke test)", DefaultValueFactory = _ => "full" };
        var json = CliOptions.Json();
        var command = new Command("bitdelta", "fine-tune the demo base fully, compress with BitDelta, compare held-out NLL and bytes") { steps, distillSteps, cache, outDir, scale, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(steps), parse.GetValue(distillSteps), parse.GetValue(cache)!, parse.GetValue(outDir)!,
            DemoScale.Parse(parse.GetValue(scale)!), parse.GetValue(json))));
        return command;
    }

    const ulong Seed = 4321;

    static int Run(int steps, int distillSteps, string cacheDir, string outDir, DemoScale scale, bool json)
    {
        if (steps < 1 || distillSteps < 1) throw new PeftSharpException("--steps and --distill-steps: expected whole numbers ≥ 1");
        var corpus = DemoCorpus.Load();
        var baseInfo = DemoBaseModel.EnsureTrained(cacheDir, corpus, scale, Seed);
        var tokenizer = ModelTokenizer.Load(baseInfo.Folder);
        string ftDir = Path.Combine(outDir, "finetuned"), deltaDir = Path.Combine(outDir, "delta"), rawDir = Path.Combine(outDir, "delta-undistilled");
        foreach (var d in new[] { ftDir, deltaDir, rawDir }) if (Directory.Exists(d)) Directory.Delete(d, recursive: true);
        Directory.CreateDirectory(outDir);

        var taskIds = tokenizer.Encode(corpus.WhisperValidation[..Math.Min(scale.EvalChars, corpus.WhisperValidation.Length)]);
        var generalIds = tokenizer.Encode(corpus.HeldOutValidation[..Math.Min(scale.EvalChars, corpus.HeldOutValidation.Length)]);
        (double Task, double General) Nll(CausalLM m) { m.eval(); return (Scoring.MeanNll(m, taskIds).MeanNll, Scoring.MeanNll(m, generalIds).MeanNll); }

        // 1. Full fine-tuning (every parameter, float32).
        using (var model = ModelLoader.Load(baseInfo.Folder, ScalarType.Float32))
        {
            foreach (var p in model.parameters()) p.requires_grad = true;
            model.train();
            DemoTraining.Run("full fine-tuning", model, model.named_parameters().Select(p => (p.name, p.parameter)).ToList(), tokenizer,
                corpus.WhisperTrain, corpus.WhisperValidation[..Math.Min(scale.EvalChars, corpus.WhisperValidation.Length)], scale.Context,
                steps, TimeSpan.FromHours(1), scale.AdapterBatch, 3e-4, Seed);
            foreach (var p in model.parameters()) p.requires_grad = false;
            ModelSaver.SaveLike(model, baseInfo.Folder, ftDir);
        }

        using var baseModel = ModelLoader.Load(baseInfo.Folder, ScalarType.Float32);
        using var finetuned = ModelLoader.Load(ftDir, ScalarType.Float32);
        var baseNll = Nll(baseModel);
        var ftNll = Nll(finetuned);

        // 2. Compress, score with scales at mean |Δ|.
        using var delta = BitDelta.Compress(baseModel, finetuned);
        delta.Save(rawDir, baseInfo.Folder);
        var (signBytes, delta16, fullBytes) = delta.Sizes();
        (double Task, double General) Rebuilt()
        {
            using var m = ModelLoader.Load(baseInfo.Folder, ScalarType.Float32);
            delta.ApplyTo(m);
            return Nll(m);
        }
        var rawNll = Rebuilt();

        // 3. Distil the scales on generic text (the held-out plays as written, not the task), then score again.
        var calibration = TextData.Pack(tokenizer, [corpus.HeldOutTrain], 128).Examples;
        var batches = new List<Tensor>();
        try
        {
            for (int i = 0; i + 4 <= calibration.Count && batches.Count < distillSteps; i += 4)
                batches.Add(tensor(calibration.Skip(i).Take(4).SelectMany(e => e.InputIds.Select(id => (long)id)).ToArray(), [4, calibration[i].Length]));
            using var student = ModelLoader.Load(ftDir, ScalarType.Float32);
            var baseWeights = baseModel.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
            var losses = BitDeltaDistillation.Distill(delta, student, finetuned, baseWeights, batches, new BitDeltaDistillation.Options(distillSteps),
                (s, l) => { if (s % 10 == 0) Console.Error.WriteLine($"  distil step {s + 1}/{distillSteps}: logits MSE {l:G4}"); });
            Console.Error.WriteLine($"  logits MSE {losses[0]:G4} → {losses[^1]:G4}");
        }
        finally
        {
            foreach (var b in batches) b.Dispose();
        }
        delta.Save(deltaDir, baseInfo.Folder);
        var distilledNll = Rebuilt();

        var rows = new (string Name, (double Task, double General) Nll, string Bytes)[]
        {
            ("base", baseNll, "—"),
            ("fine-tuned (full)", ftNll, $"{delta16:N0} as a 16-bit delta of the block linears"),
            ("BitDelta, scales = mean |Δ|", rawNll, $"{signBytes:N0} signs + scales"),
            ("BitDelta, distilled scales", distilledNll, $"{signBytes:N0} signs + scales"),
        };
        var md = new System.Text.StringBuilder();
        md.AppendLine("| model | held-out task NLL (lowercase) | held-out NLL (as written) | delta bytes |");
        md.AppendLine("|---|---|---|---|");
        foreach (var r in rows) md.AppendLine($"| {r.Name} | {r.Nll.Task:F4} | {r.Nll.General:F4} | {r.Bytes} |");
        md.AppendLine();
        md.AppendLine($"Signs and scales are {(double)signBytes / delta16:F4} of the 16-bit delta of the same matrices; the tensors kept whole (embeddings, norms) add {fullBytes:N0} bytes.");
        File.WriteAllText(Path.Combine(outDir, "bitdelta.md"), md.ToString());
        Console.WriteLine(md.ToString());
        if (json)
            JsonOutput.Write(new
            {
                base_nll = baseNll.Task, finetuned_nll = ftNll.Task, bitdelta_nll = rawNll.Task, bitdelta_distilled_nll = distilledNll.Task,
                base_general_nll = baseNll.General, finetuned_general_nll = ftNll.General, bitdelta_general_nll = rawNll.General,
                bitdelta_distilled_general_nll = distilledNll.General, sign_and_scale_bytes = signBytes, delta_16bit_bytes = delta16,
                ratio = (double)signBytes / delta16, full_tensor_bytes = fullBytes,
            });
        return 0;
    }
}
