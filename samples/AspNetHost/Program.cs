// Hosts a base model and its LoRA adapters inside an ASP.NET Core app, through the library API.
// Usage: dotnet run -- --model MODEL_DIR --adapters name=DIR[;name=DIR...] [--urls http://127.0.0.1:5080]
//   GET  /adapters                                           -> ["name", ...]
//   POST /generate {"prompt": "...", "adapter": "name" | null, "maxNewTokens": 16} -> {"adapter": ..., "text": ...}
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Tuners.Lora;

var builder = WebApplication.CreateBuilder(args);
builder.Services.AddSingleton(new ModelHost(builder.Configuration["model"] ?? "tiny-llama", builder.Configuration["adapters"] ?? ""));
var app = builder.Build();

app.MapGet("/adapters", (ModelHost host) => host.Adapters);
app.MapPost("/generate", (GenerateRequest request, ModelHost host) =>
{
    if (string.IsNullOrEmpty(request.Prompt)) return Results.BadRequest(new { error = "prompt: give some text" });
    if (request.Adapter is string name && !host.Adapters.Contains(name))
        return Results.BadRequest(new { error = $"adapter: no adapter named \"{name}\"; loaded: {string.Join(", ", host.Adapters)}" });
    return Results.Ok(new { adapter = request.Adapter, text = host.Generate(request.Prompt, request.Adapter, Math.Clamp(request.MaxNewTokens, 1, 256)) });
});
app.Run();

record GenerateRequest(string Prompt, string? Adapter = null, int MaxNewTokens = 16);

/// <summary>One base model with its adapters, loaded once; requests take turns on it (a TorchSharp module is not thread-safe).</summary>
sealed class ModelHost
{
    readonly object _gate = new();
    readonly CausalLM _model;
    readonly LoraModel? _lora;
    readonly ModelTokenizer _tokenizer;

    public IReadOnlyList<string> Adapters { get; }

    public ModelHost(string modelDir, string adapters)
    {
        _tokenizer = ModelTokenizer.Load(modelDir);
        _model = ModelLoader.Load(modelDir);
        _model.eval();
        foreach (var entry in adapters.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var (name, dir) = entry.Split('=', 2) is [var n, var d] ? (n, d) : throw new ArgumentException($"--adapters: expected name=folder, got \"{entry}\"");
            if (_lora is null) _lora = AdapterFiles.Load(_model, dir, name);
            else AdapterFiles.LoadAdapter(_lora, dir, name);
        }
        Adapters = _lora?.Configs.Keys.ToArray() ?? [];
    }

    public string Generate(string prompt, string? adapter, int maxNewTokens)
    {
        lock (_gate)
        {
            using var baseOnly = adapter is null ? _lora?.DisableAdapters() : null;
            if (adapter is not null) _lora!.SetAdapter(adapter);
            var ids = new TextGenerator(_model, _tokenizer).Generate(prompt, new GenerationOptions(MaxNewTokens: maxNewTokens));
            return _tokenizer.Decode(ids, skipSpecialTokens: true);
        }
    }
}
