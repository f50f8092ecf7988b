using System.CommandLine;
using PeftSharp.Models;
using static TorchSharp.torch;

namespace PeftSharp.Cli;

/// <summary>Options shared by several commands, with one definition each so help reads the same everywhere.</summary>
public static class CliOptions
{
    public static Option<string> Model() => new("--model")
    {
        Description = "Hugging Face model folder (config.json, *.safetensors, tokenizer files)",
        Required = true,
    };

    public static Option<string> DType() => new("--dtype")
    {
        Description = "weights and compute dtype: float32 or bfloat16",
        DefaultValueFactory = _ => "float32",
    };

    public static Option<string> DeviceOption() => new("--device")
    {
        Description = "cpu (default) or cuda",
        DefaultValueFactory = _ => "cpu",
    };

    public static Option<bool> Json() => new("--json")
    {
        Description = "end the output with one line holding a JSON object of the results",
    };

    public static Device ParseDevice(string name) => name.ToLowerInvariant() switch
    {
        "cpu" => CPU,
        "cuda" when cuda.is_available() => CUDA,
        "cuda" => throw new PeftSharpException("--device cuda: CUDA is not available in this build (build with -p:PeftSharpBackend=cuda on a machine with a GPU)"),
        _ => throw new PeftSharpException($"--device: expected cpu or cuda, got \"{name}\""),
    };

    public static ScalarType ParseDType(string name) => ModelLoader.ParseDType(name);

    /// <summary>--target: "all-linear", or comma-separated module names (matched exactly or as a ".suffix", as PEFT).</summary>
    public static Peft.TargetModules ParseTargets(string text) =>
        text.Trim() == Peft.TargetModules.AllLinearShorthand
            ? Peft.TargetModules.AllLinear
            : Peft.TargetModules.FromNames(text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));
}
