using PeftSharp.Evaluation;
using Spectre.Console;

namespace PeftSharp.Cli.Evaluation;

/// <summary>The summary table (stdout) and the markdown + PNG report comparing adapters task by task.</summary>
public static class EvalReport
{
    public static void PrintTable(IReadOnlyList<(string Adapter, EvalSummary Summary)> rows)
    {
        var table = new Table().AddColumns("adapter", "task", "mode", "n", "correct", "accuracy", "acc_norm");
        foreach (var (adapter, s) in rows)
            table.AddRow(Markup.Escape(adapter), Markup.Escape(s.Task), s.Mode, s.N.ToString(), s.Correct.ToString(), $"{100 * s.Accuracy:F2}",
                         s.AccNorm is double n ? $"{100 * n:F2}" : "");
        var adapters = rows.Select(r => r.Adapter).Distinct().ToList();
        if (rows.Count > adapters.Count)
            foreach (var a in adapters)
            {
                var mine = rows.Where(r => r.Adapter == a).Select(r => r.Summary).ToList();
                table.AddRow(Markup.Escape(a), "[bold]average[/]", "", "", "", $"{100 * mine.Average(m => m.Accuracy):F2}", "");
            }
        AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) }).Write(table);
    }

    /// <summary>
    /// Writes <paramref name="markdownPath"/> (a table: one row per task, one column per adapter, accuracy in percent, and
    /// the average as LLM-Adapters' tables give it) and a grouped bar chart beside it with the extension .png.
    /// </summary>
    public static void Write(string markdownPath, IReadOnlyList<(string Adapter, EvalSummary Summary)> rows, string? model, string mode)
    {
        var adapters = rows.Select(r => r.Adapter).Distinct().ToList();
        var tasks = rows.Select(r => r.Summary.Task).Distinct().ToList();
        double? Acc(string a, string t) => rows.Where(r => r.Adapter == a && r.Summary.Task == t).Select(r => (double?)r.Summary.Accuracy).FirstOrDefault();
        string png = Path.ChangeExtension(markdownPath, ".png");
        var md = new System.Text.StringBuilder();
        md.AppendLine("# Evaluation report").AppendLine();
        if (model is not null) md.AppendLine($"Model: `{model}`; mode: {mode}. Accuracy in percent.").AppendLine();
        md.AppendLine("| task | n | " + string.Join(" | ", adapters) + " |");
        md.AppendLine("|---|---:|" + string.Concat(adapters.Select(_ => "---:|")));
        foreach (var t in tasks)
        {
            int n = rows.First(r => r.Summary.Task == t).Summary.N;
            md.AppendLine($"| {t} | {n} | " + string.Join(" | ", adapters.Select(a => Acc(a, t) is double v ? $"{100 * v:F1}" : "")) + " |");
        }
        if (tasks.Count > 1)
            md.AppendLine("| **average** | | " + string.Join(" | ", adapters.Select(a =>
                $"{100 * rows.Where(r => r.Adapter == a).Average(r => r.Summary.Accuracy):F1}")) + " |");
        md.AppendLine().AppendLine($"![accuracy by task]({Path.GetFileName(png)})");

        var plot = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var bars = new List<ScottPlot.Bar>();
        for (int ti = 0; ti < tasks.Count; ti++)
            for (int ai = 0; ai < adapters.Count; ai++)
                if (Acc(adapters[ai], tasks[ti]) is double v)
                    bars.Add(new ScottPlot.Bar { Position = ti * (adapters.Count + 1) + ai, Value = 100 * v, FillColor = palette.GetColor(ai) });
        plot.Add.Bars(bars);
        var ticks = tasks.Select((t, i) => new ScottPlot.Tick(i * (adapters.Count + 1) + (adapters.Count - 1) / 2.0, t)).ToArray();
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(ticks);
        plot.Axes.Bottom.TickLabelStyle.Rotation = tasks.Count > 4 ? 30 : 0;
        plot.Axes.Bottom.TickLabelStyle.Alignment = tasks.Count > 4 ? ScottPlot.Alignment.MiddleLeft : ScottPlot.Alignment.UpperCenter;
        for (int ai = 0; ai < adapters.Count; ai++)
            plot.Legend.ManualItems.Add(new ScottPlot.LegendItem { LabelText = adapters[ai], FillColor = palette.GetColor(ai) });
        plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        plot.Axes.Margins(bottom: 0);
        plot.Axes.SetLimitsY(0, 105);
        plot.YLabel("accuracy (%)");
        plot.Title("Accuracy by task");

        string folder = Path.GetDirectoryName(Path.GetFullPath(markdownPath))!;
        Directory.CreateDirectory(folder);
        string tmpPng = Path.Combine(folder, $".{Path.GetFileName(png)}.tmp-{Guid.NewGuid():N}.png");
        plot.SavePng(tmpPng, Math.Max(600, 120 * tasks.Count * adapters.Count / 2 + 300), 480);
        File.Move(tmpPng, png, overwrite: true);
        string tmpMd = Path.Combine(folder, $".{Path.GetFileName(markdownPath)}.tmp-{Guid.NewGuid():N}");
        File.WriteAllText(tmpMd, md.ToString());
        File.Move(tmpMd, markdownPath, overwrite: true);
    }
}
