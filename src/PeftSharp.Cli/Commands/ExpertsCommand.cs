using System.CommandLine;
using PeftSharp.Models;
using PeftSharp.Tokenization;
using PeftSharp.Tuners.Mixtures;
using Spectre.Console;
using static TorchSharp.torch;

namespace PeftSharp.Cli.Commands;

/// <summary>
/// <c>peftsharp experts</c>: runs a text through a model with mixture adapters (MixLoRA, MoLoRA, MoV) and reports, per
/// router, each expert's share of the tokens, the mean router entropy and the coefficient of variation of the shares;
/// optionally a heat map (routers × experts) as PNG.
/// </summary>
public static class ExpertsCommand
{
    public static Command Create()
    {
        var model = CliOptions.Model();
        var adapters = ModelSession.AdapterOption();
        var text = new Option<string>("--text") { Description = "the text to route: a UTF-8 file, or the text itself when no such file exists", Required = true };
        var png = new Option<string?>("--png") { Description = "write a heat map of the expert shares (routers × experts) to this PNG file" };
        var dtype = CliOptions.DType();
        var device = CliOptions.DeviceOption();
        var json = CliOptions.Json();
        var command = new Command("experts", "expert usage of mixture adapters (MixLoRA, MoLoRA, MoV) on a text: shares, router entropy, heat map")
            { model, adapters, text, png, dtype, device, json };
        command.SetAction(parse => CliErrors.Run(() => Run(parse.GetValue(model)!, parse.GetValue(adapters)!, parse.GetValue(text)!,
            parse.GetValue(png), parse.GetValue(dtype)!, parse.GetValue(device)!, parse.GetValue(json))));
        return command;
    }

    static int Run(string modelDir, string[] adapterArgs, string textArg, string? pngPath, string dtypeName, string deviceName, bool json)
    {
        var dtype = CliOptions.ParseDType(dtypeName);
        var dev = CliOptions.ParseDevice(deviceName);
        ModelConfig.Load(modelDir);
        if (adapterArgs.Length == 0) throw new PeftSharpException("--adapter: give the mixture adapter folder (MixLoRA, MoLoRA or MoV)");
        string text = File.Exists(textArg) ? File.ReadAllText(textArg) : textArg;
        var tokenizer = ModelTokenizer.Load(modelDir);
        using var session = ModelSession.Load(modelDir, adapterArgs, dtype, dev);
        var mixtures = session.Peft!.Tuners.OfType<IMixtureTunerModel>().Where(t => t.ActiveAdapters.Count > 0).ToList();
        if (mixtures.Count == 0)
            throw new PeftSharpException($"--adapter: no active mixture adapter (peft_type MIXLORA, MOLORA or MOV) among {string.Join(", ", session.Peft.Adapters)}");
        var ids = tokenizer.Encode(text, addSpecialTokens: true);
        if (ids.Count == 0) throw new PeftSharpException("--text: the text has no tokens");
        var stats = new RouterStatistics();
        foreach (var m in mixtures) m.Log.Statistics = stats;
        var model = session.Model;
        int window = model.TokenContext;
        using (no_grad())
            for (int start = 0; start < ids.Count; start += window)
            {
                using var scope = NewDisposeScope();
                var chunk = ids.Skip(start).Take(window).Select(i => (long)i).ToArray();
                model.Forward(tensor(chunk, device: model.Device).unsqueeze(0));
            }
        foreach (var m in mixtures) m.Log.Statistics = null;

        int experts = stats.Routers.Max(r => r.Counts.Length);
        var table = new Table().AddColumn("router").AddColumn("tokens");
        for (int e = 0; e < experts; e++) table.AddColumn(new TableColumn($"e{e}").RightAligned());
        table.AddColumn("entropy").AddColumn("CV");
        foreach (var r in stats.Routers)
        {
            var cells = new List<string> { Markup.Escape(r.Label), r.Tokens.ToString() };
            cells.AddRange(r.Shares.Select(s => $"{100 * s:F1}%"));
            while (cells.Count < 2 + experts) cells.Add("");
            cells.Add($"{r.MeanEntropy:F3} / {Math.Log(r.Counts.Length):F3}");
            cells.Add($"{r.CoefficientOfVariation:F3}");
            table.AddRow(cells.ToArray());
        }
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(json ? Console.Error : Console.Out) });
        console.Write(table);
        console.WriteLine($"{ids.Count} tokens; shares count each token's chosen experts (top-k; top-1 for dense routers); entropy in nats / its maximum log E; CV = std/mean of the shares; mean CV {stats.MeanCoefficientOfVariation:F3}");
        if (pngPath is not null)
        {
            SaveHeatMap(stats, experts, pngPath);
            console.WriteLine($"heat map: {pngPath}");
        }
        if (json)
            JsonOutput.Write(new
            {
                tokens = ids.Count,
                mean_cv = stats.MeanCoefficientOfVariation,
                routers = stats.Routers.Select(r => new { label = r.Label, tokens = r.Tokens, shares = r.Shares, counts = r.Counts, entropy = r.MeanEntropy, cv = r.CoefficientOfVariation }),
            });
        return 0;
    }

    static void SaveHeatMap(RouterStatistics stats, int experts, string path)
    {
        var values = new double[stats.Routers.Count, experts];
        for (int i = 0; i < stats.Routers.Count; i++)
        {
            var shares = stats.Routers[i].Shares;
            for (int e = 0; e < experts; e++) values[i, e] = e < shares.Length ? shares[e] : double.NaN;
        }
        var plt = new ScottPlot.Plot();
        var heat = plt.Add.Heatmap(values);
        plt.Add.ColorBar(heat);
        plt.Title("expert share per router");
        plt.XLabel("expert");
        plt.YLabel("router (first at the top)");
        string? folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (folder is not null) Directory.CreateDirectory(folder);
        string temp = path + ".tmp.png";
        plt.SavePng(temp, 200 + 60 * experts, 150 + 30 * stats.Routers.Count);
        File.Move(temp, path, overwrite: true);
    }
}
