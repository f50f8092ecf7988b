using System.CommandLine;
using PeftSharp.Cli.Commands;
using PeftSharp.Composition;
using PeftSharp.Peft;
using PeftSharp.Tuners.Attempt;

namespace PeftSharp.Cli.Training.Methods;

/// <summary>
/// <c>--method attempt</c>: ATTEMPT (docs/composition.md), a new target prompt plus instance-wise attention over frozen
/// source prompts given by repeated <c>--source-prompt DIR</c>; the prompt length is the sources'.
/// </summary>
public sealed class AttemptMethod : TrainMethod
{
    readonly Option<string[]> sources = new("--source-prompt") { Description = "ATTEMPT: a source soft-prompt adapter folder (frozen); repeat for each", AllowMultipleArgumentsPerToken = false, DefaultValueFactory = _ => [] };
    readonly Option<int> hidden = new Option<int>("--attn-hidden-size") { Description = "ATTEMPT: width of the attention's down projection", DefaultValueFactory = _ => 300 }.AtLeast(1);
    readonly Option<double?> temperature = new Option<double?>("--attn-temperature") { Description = "ATTEMPT: softmax temperature (default: hidden size · e)" }.Above(0);
    readonly Option<string> targetInit = new("--target-init") { Description = "ATTEMPT: target prompt start, ZERO or RANDOM", DefaultValueFactory = _ => "ZERO" };

    public override string Name => "attempt";
    public override IReadOnlyList<Option> Options => [sources, hidden, temperature, targetInit];

    public override PeftConfig CreateConfig(TrainSettings s, SharedMethodOptions o)
    {
        var dirs = s.Get(sources) ?? [];
        if (dirs.Length == 0) throw new PeftSharpException("--method attempt needs at least one --source-prompt DIR (a trained soft-prompt adapter)");
        foreach (var dir in dirs)
            if (!Directory.Exists(dir)) throw new PeftSharpException($"--source-prompt {dir}: folder not found");
        long tokens;
        using (var first = PromptTransfer.ReadPrompt(dirs[0])) tokens = first.shape[0];
        return new AttemptConfig
        {
            NumVirtualTokens = (int)tokens,
            SourcePrompts = dirs.Select(Path.GetFullPath).ToList(),
            AttnHiddenSize = s.Get(hidden),
            Temperature = s.Get(temperature),
            TargetInit = s.Get(targetInit).ToUpperInvariant(),
        };
    }
}
