using PeftSharp.Training;

namespace PeftSharp.Cli.Training;

/// <summary>A PNG of training and validation loss against optimizer step, drawn from a run's metrics.jsonl with ScottPlot.</summary>
public static class LossPlot
{
    /// <summary>Reads <paramref name="metricsPath"/> (see <see cref="MetricsLog"/>) and writes the plot to <paramref name="pngPath"/>.</summary>
    /// <exception cref="PeftSharpException">The file is missing, malformed, or holds no loss to plot.</exception>
    public static void Save(string metricsPath, string pngPath, int width = 900, int height = 540)
    {
        var entries = MetricsLog.Read(metricsPath);
        // NaN marks a step with no labelled token: a gap, not a point.
        var train = entries.Where(e => e.Loss is double l && double.IsFinite(l)).ToList();
        var eval = entries.Where(e => e.EvalLoss is double l && double.IsFinite(l)).ToList();
        if (train.Count == 0 && eval.Count == 0) throw new PeftSharpException($"{metricsPath}: no loss values to plot");

        var plot = new ScottPlot.Plot();
        if (train.Count > 0)
        {
            var line = plot.Add.Scatter(train.Select(e => (double)e.Step).ToArray(), train.Select(e => e.Loss!.Value).ToArray());
            line.LegendText = "training loss";
            line.MarkerSize = train.Count > 50 ? 0 : 4;
        }
        if (eval.Count > 0)
        {
            var line = plot.Add.Scatter(eval.Select(e => (double)e.Step).ToArray(), eval.Select(e => e.EvalLoss!.Value).ToArray());
            line.LegendText = "validation loss";
            line.MarkerSize = 6;
        }
        plot.Title("Loss");
        plot.XLabel("step");
        plot.YLabel("mean token cross-entropy");
        plot.ShowLegend(ScottPlot.Alignment.UpperRight); // loss falls: the upper right is usually empty
        string? folder = Path.GetDirectoryName(Path.GetFullPath(pngPath));
        if (folder is not null) Directory.CreateDirectory(folder);
        plot.SavePng(pngPath, width, height);
    }
}
