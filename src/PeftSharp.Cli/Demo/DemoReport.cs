using System.Globalization;
using System.Text;
using PeftSharp.Models;

namespace PeftSharp.Cli.Demo;

/// <summary>What the demo measured, written as report.md plus loss.png.</summary>
public sealed class DemoReport
{
    public required DemoScale Scale { get; init; }
    public required DemoBaseModel.Result BaseModel { get; init; }
    public required ModelConfig ModelConfig { get; init; }
    public double BaseHeldOutPpl, BaseShoutPpl, BaseWhisperPpl, WhisperPpl, WhisperOnShoutPpl, WhisperOnHeldOutPpl,
                  ShoutPpl, ShoutOnWhisperPpl, ShoutOnHeldOutPpl, DisabledHeldOutPpl;
    public string BaseSample = "", WhisperSample = "", ShoutSample = "";
    public string ParameterLine = "";
    public long TrainableParams, AllParams, AdapterBytes, BaseBytes;
    public DemoTraining? WhisperTraining, ShoutTraining;
    public double MergedMaxAbsDiff, MergedMaxAbsDiff32, LogitScale, Seconds;

    static string F(double x, string format = "F2") => x.ToString(format, CultureInfo.InvariantCulture);

    public string Summary() =>
        $"lowercase perplexity {F(BaseWhisperPpl)} → {F(WhisperPpl)} with adapter \"whisper\"; " +
        $"UPPERCASE perplexity {F(BaseShoutPpl)} → {F(ShoutPpl)} with adapter \"shout\"; " +
        $"adapter {AdapterBytes / 1024.0:F0} KiB vs base {BaseBytes / 1024.0 / 1024.0:F1} MiB; merged = unmerged within {MergedMaxAbsDiff32:G2} (float32); {Seconds:F0} s";

    public object Json(string reportPath) => new
    {
        base_model_dir = BaseModel.Folder,
        base_model_cached = BaseModel.Cached,
        whisper_ppl_before = BaseWhisperPpl,
        whisper_ppl_after = WhisperPpl,
        heldout_ppl_base = BaseHeldOutPpl,
        shout_ppl_before = BaseShoutPpl,
        shout_ppl_after = ShoutPpl,
        trainable_params = TrainableParams,
        all_params = AllParams,
        trainable_percent = 100.0 * TrainableParams / AllParams,
        adapter_bytes = AdapterBytes,
        base_bytes = BaseBytes,
        merged_max_abs_diff = MergedMaxAbsDiff32,
        merged_max_abs_diff_bf16 = MergedMaxAbsDiff,
        report = reportPath,
        seconds = Seconds,
    };

    public string Write(string outDir)
    {
        string plot = Path.Combine(outDir, "loss.png");
        WritePlot(plot);
        var md = new StringBuilder();
        md.AppendLine("# PeftSharp demo: LoRA on a small Shakespeare model");
        md.AppendLine();
        md.AppendLine($"Generated {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC in {F(Seconds, "F0")} s on {Environment.ProcessorCount} cores (scale \"{Scale.Name}\").");
        md.AppendLine();
        md.AppendLine("## The base model");
        md.AppendLine();
        md.AppendLine($"A {ModelConfig.Layers}-layer Llama-architecture model (hidden {ModelConfig.Hidden}, {ModelConfig.Heads} heads / {ModelConfig.KeyValueHeads} key-value heads, " +
                      $"context {ModelConfig.ContextLength}, byte-level BPE vocabulary of {ModelConfig.VocabSize}) with {BaseModel.Parameters:N0} parameters, trained from scratch " +
                      $"on the first 85% of Tiny Shakespeare for {BaseModel.Training?.Steps ?? 0} steps{(BaseModel.Cached ? " (in an earlier run; loaded from the cache)" : "")}. " +
                      $"It is an ordinary Hugging Face folder: `{BaseModel.Folder}`.");
        md.AppendLine();
        md.AppendLine("## Two LoRA adapters on one base");
        md.AppendLine();
        md.AppendLine("Each learns a task the base model cannot do, on text it never saw: `whisper` writes the held-out plays (the last 10% of the corpus) " +
                      "in lowercase, `shout` writes Shakespeare in UPPERCASE.");
        md.AppendLine($"Both use r = {Scale.Rank}, lora_alpha = {2 * Scale.Rank}, dropout 0.05 on every linear layer (`all-linear`); `whisper` trained {WhisperTraining?.Steps} steps, `shout` {ShoutTraining?.Steps}.");
        md.AppendLine($"`{ParameterLine}` — the adapter file is {AdapterBytes / 1024.0:F0} KiB against {BaseBytes / 1024.0 / 1024.0:F1} MiB for the base weights " +
                      $"({100.0 * AdapterBytes / BaseBytes:F1}%).");
        md.AppendLine();
        md.AppendLine("| perplexity on held-out validation text | base model | adapter `whisper` | adapter `shout` |");
        md.AppendLine("|---|---|---|---|");
        md.AppendLine($"| lowercase (the `whisper` task) | {F(BaseWhisperPpl)} | **{F(WhisperPpl)}** | {F(ShoutOnWhisperPpl)} |");
        md.AppendLine($"| UPPERCASE (the `shout` task) | {F(BaseShoutPpl)} | {F(WhisperOnShoutPpl)} | **{F(ShoutPpl)}** |");
        md.AppendLine($"| as written (neither task) | {F(BaseHeldOutPpl)} | {F(WhisperOnHeldOutPpl)} | {F(ShoutOnHeldOutPpl)} |");
        md.AppendLine();
        md.AppendLine($"With adapters disabled (`DisableAdapters()`), the model is the base again: {F(DisabledHeldOutPpl)} on the text as written.");
        md.AppendLine();
        md.AppendLine("The adapters were switched at runtime on one loaded model (`SetAdapter`), and saved in Hugging Face PEFT's format in `adapters/whisper` and `adapters/shout` " +
                      "(loadable by Python PEFT as they are).");
        md.AppendLine();
        md.AppendLine($"Merging an adapter into the weights (zero added latency) gives the same outputs: in float32 the logits differ by at most {MergedMaxAbsDiff32:G3} " +
                      $"(largest logit {LogitScale:F1}); merged into bfloat16 weights they differ by {MergedMaxAbsDiff:G3}, the rounding of storing W + ΔW in bfloat16.");
        md.AppendLine();
        md.AppendLine("## Samples (prompt `ROMEO:`, temperature 0.8, top-p 0.95)");
        foreach (var (title, text) in new[] { ("base model", BaseSample), ("adapter `whisper`", WhisperSample), ("adapter `shout`", ShoutSample) })
        {
            md.AppendLine();
            md.AppendLine($"**{title}**");
            md.AppendLine();
            md.AppendLine("```");
            md.AppendLine(("ROMEO:\n" + text).TrimEnd());
            md.AppendLine("```");
        }
        md.AppendLine();
        md.AppendLine("## Loss");
        md.AppendLine();
        md.AppendLine("![training and validation loss](loss.png)");
        string path = Path.Combine(outDir, "report.md");
        File.WriteAllText(path, md.ToString());
        return path;
    }

    void WritePlot(string path)
    {
        var plt = new ScottPlot.Plot();
        void Add(DemoTraining? run, string label)
        {
            if (run is null || run.TrainLoss.Count == 0) return;
            var train = plt.Add.Scatter(run.TrainLoss.Select(p => (double)p.Step).ToArray(), run.TrainLoss.Select(p => p.Loss).ToArray());
            train.LegendText = $"{label} (train)";
            train.MarkerSize = 0;
            if (run.EvalLoss.Count > 0)
            {
                var eval = plt.Add.Scatter(run.EvalLoss.Select(p => (double)p.Step).ToArray(), run.EvalLoss.Select(p => p.Loss).ToArray());
                eval.LegendText = $"{label} (validation)";
                eval.LinePattern = ScottPlot.LinePattern.Dashed;
            }
        }
        Add(BaseModel.Training, "base model");
        Add(WhisperTraining, "adapter whisper");
        Add(ShoutTraining, "adapter shout");
        plt.Title("Training and validation loss");
        plt.XLabel("step");
        plt.YLabel("loss (nats/token)");
        plt.ShowLegend();
        plt.SavePng(path, 900, 520);
    }
}
