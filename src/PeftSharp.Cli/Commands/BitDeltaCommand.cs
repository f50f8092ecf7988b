using System.CommandLine;
using System.Text.Json.Nodes;
using PeftSharp.Models;
using PeftSharp.Quantization.BitDelta;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp bitdelta compress|apply</c>: a fully fine-tuned model stored as 1-bit signs and one scale per matrix
/// against its base (BitDelta), its scales optionally distilled on calibration text; and the reconstructed model
/// written as a plain folder. <c>eval</c> and <c>generate</c> take <c>--delta</c> to run one on its base directly.
/// </summary>
public static class BitDeltaCommand
{
    public static Command Create() => new("bitdelta", "store a fine-tuned model as a 1-bit delta of its base (BitDelta)") { Compress(), Apply() };

    static Command Compress()
    {
        var baseModel = new Option<string>("--base") { Description = "the base model folder", Required = true };
        var finetuned = new Option<string>("--finetuned") { Description = "the fully fine-tuned model folder (same architecture)", Required = true };
        var outDir = new Option<string>("--out") { Description = "new folder for the delta", Required = true };
        var calibration = new Option<string?>("--calibration") { Description = "text file to distil the scales on (without it, scales stay mean |Δ|)" };
        var steps = new Option<int>("--steps") { Description = "distillation steps", DefaultValueFactory = _ => 100 };
        var batchSize = new Option<int>("--batch-size") { Description = "sequences per distillation step", DefaultValueFactory = _ => 4 };
        var maxLength = new Option<int>("--max-length") { Description = "tokens per calibration sequence", DefaultValueFactory = _ => 128 };
        var lr = new Option<double>("--lr") { Description = "distillation learning rate (AdamW, cosine schedule)", DefaultValueFactory = _ => 1e-4 };
        var dtype = CliOptions.DType();
        var json = CliOptions.Json();
        var command = new Command("compress", "compress a fine-tuned model against its base: packed signs + one scale per matrix")
            { baseModel, finetuned, outDir, calibration, steps, batchSize, maxLength, lr, dtype, json };
        command.SetAction(parse => CliErrors.Run(() => RunCompress(parse.GetValue(baseModel)!, parse.GetValue(finetuned)!, parse.GetValue(outDir)!,
            parse.GetValue(calibration), parse.GetValue(steps), parse.GetValue(batchSize), parse.GetValue(maxLength), parse.GetValue(lr),
            CliOptions.ParseDType(parse.GetValue(dtype)!), parse.GetValue(json))));
        return command;
    }

    static Command Apply()
    {
        var baseModel = new Option<string>("--base") { Description = "the base model folder", Required = true };
        var delta = DeltaOption();
        delta.Required = true;
        var outDir = new Option<string>("--out") { Description = "new folder for the reconstructed model", Required = true };
        var json = CliOptions.Json();
        var command = new Command("apply", "write base + delta as a plain Hugging Face model folder") { baseModel, delta, outDir, json };
        command.SetAction(parse => CliErrors.Run(() =>
        {
            string outPath = parse.GetValue(outDir)!, basePath = parse.GetValue(baseModel)!;
            if (Directory.Exists(outPath) && Directory.EnumerateFileSystemEntries(outPath).Any())
                throw new PeftSharpException($"--out {outPath}: folder exists and is not empty; choose a new folder (nothing is overwritten)");
            using var model = ModelLoader.Load(basePath, ScalarType.Float32, CPU);
            using (var d = BitDelta.Load(parse.GetValue(delta)!)) d.ApplyTo(model);
            ModelSaver.SaveLike(model, basePath, outPath);
            Console.Error.WriteLine($"wrote the reconstructed model to {outPath}");
            if (parse.GetValue(json)) JsonOutput.Write(new { out_dir = outPath });
            return 0;
        }));
        return command;
    }

    /// <summary>The <c>--delta</c> option of eval and generate.</summary>
    public static Option<string?> DeltaOption() => new("--delta") { Description = "a BitDelta folder (bitdelta compress) to apply to --model, which must be its base" };

    /// <summary>Applies <paramref name="deltaDir"/> to <paramref name="model"/> when given.</summary>
    public static void ApplyIfGiven(CausalLM model, string? deltaDir)
    {
        if (deltaDir is null) return;
        using var delta = BitDelta.Load(deltaDir);
        delta.ApplyTo(model);
    }

    static int RunCompress(string baseDir, string finetunedDir, string outDir, string? calibration, int steps, int batchSize, int maxLength,
                           double lr, ScalarType dtype, bool json)
    {
        if (steps < 1) throw new PeftSharpException($"--steps: expected a whole number ≥ 1, got {steps}");
        if (batchSize < 1) throw new PeftSharpException($"--batch-size: expected a whole number ≥ 1, got {batchSize}");
        if (maxLength < 2) throw new PeftSharpException($"--max-length: expected a whole number ≥ 2, got {maxLength}");
        if (!(lr > 0)) throw new PeftSharpException($"--lr: expected a value > 0, got {lr}");
        if (calibration is not null && !File.Exists(calibration)) throw new PeftSharpException($"--calibration {calibration}: file not found");
        if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
            throw new PeftSharpException($"--out {outDir}: folder exists and is not empty; choose a new folder (nothing is overwritten)");

        using var baseModel = ModelLoader.Load(baseDir, dtype, CPU);
        using var finetuned = ModelLoader.Load(finetunedDir, dtype, CPU);
        if (baseModel.Config.ModelType != finetuned.Config.ModelType)
            throw new PeftSharpException($"--finetuned: model_type \"{finetuned.Config.ModelType}\" differs from the base's \"{baseModel.Config.ModelType}\"");
        using var delta = BitDelta.Compress(baseModel, finetuned);
        var (signBytes, delta16, fullBytes) = delta.Sizes();
        Console.Error.WriteLine($"compressed {delta.Entries.Count} matrices: {signBytes:N0} bytes of signs and scales against {delta16:N0} bytes as a 16-bit delta ({(double)signBytes / delta16:F4}); {delta.Full.Count} tensors kept whole ({fullBytes:N0} bytes)");

        var extra = new JsonObject();
        double? before = null, after = null;
        if (calibration is not null)
        {
            var tokenizer = ModelTokenizer.Load(finetunedDir);
            var blocks = TextData.LoadFile(calibration, tokenizer, maxLength).Examples;
            if (blocks.Count == 0) throw new PeftSharpException($"--calibration {calibration}: no text");
            var batches = new List<Tensor>();
            try
            {
                for (int i = 0; i < blocks.Count; i += batchSize)
                {
                    var rows = blocks.Skip(i).Take(batchSize).Where(b => b.Length == blocks[0].Length).ToList();
                    if (rows.Count > 0) batches.Add(tensor(rows.SelectMany(r => r.InputIds.Select(id => (long)id)).ToArray(), [rows.Count, rows[0].Length]));
                }
                using var student = ModelLoader.Load(finetunedDir, dtype, CPU);
                var baseWeights = baseModel.named_parameters().Where(p => delta.Entries.Any(e => e.Name == p.name)).ToDictionary(p => p.name, p => (Tensor)p.parameter);
                var losses = BitDeltaDistillation.Distill(delta, student, finetuned, baseWeights, batches, new BitDeltaDistillation.Options(steps, lr),
                    (step, loss) => { if (step % 10 == 0 || step == steps - 1) Console.Error.WriteLine($"  distil step {step + 1}/{steps}: logits MSE {loss:G4}"); });
                before = losses[0];
                after = losses[^1];
                extra["calibration"] = new JsonObject { ["file"] = Path.GetFileName(calibration), ["steps"] = steps, ["batch_size"] = batchSize, ["max_length"] = maxLength, ["lr"] = lr, ["mse_first"] = before, ["mse_last"] = after };
            }
            finally
            {
                foreach (var b in batches) b.Dispose();
            }
        }
        delta.Save(outDir, Path.GetFullPath(baseDir), extra);
        Console.Error.WriteLine($"wrote {outDir}");
        if (json)
            JsonOutput.Write(new
            {
                out_dir = outDir, matrices = delta.Entries.Count, sign_and_scale_bytes = signBytes, delta_16bit_bytes = delta16,
                ratio = (double)signBytes / delta16, full_tensor_bytes = fullBytes, distill_mse_first = before, distill_mse_last = after,
            });
        return 0;
    }
}
