using PeftSharp.Models;
using PeftSharp.Tensors;
using TorchSharp;
using static TorchSharp.torch;
using Linear = PeftSharp.Models.Layers.Linear;

namespace PeftSharp.Quantization;

/// <summary>
/// Loads a model with 4-bit linear layers, layer by layer: the model is built on the meta device (no memory), then
/// each linear layer's weight is read, quantized and stored as packed codes before the next is read, so the full
/// precision model never exists in memory at once. Folders that transformers saved quantized (config.json has a
/// bitsandbytes <c>quantization_config</c>) are read as they are; other folders are quantized while loading.
/// </summary>
public static class QuantizedModelLoader
{
    /// <summary>
    /// Loads <paramref name="modelDir"/> with 4-bit linear layers. Non-quantized tensors (embeddings, norms, biases,
    /// lm_head) get <paramref name="dtype"/>. For a folder saved quantized, its own quantization settings are used and
    /// <paramref name="config"/> (if any) only chooses the compute dtype.
    /// </summary>
    public static CausalLM Load(string modelDir, ScalarType dtype, Device? device, BitsAndBytesConfig? config)
    {
        var modelConfig = ModelConfig.Load(modelDir);
        var stored = BitsAndBytesConfig.FromModelConfig(modelConfig);
        var settings = stored is null ? config : config is null ? stored : stored with { ComputeDType = config.ComputeDType };
        if (settings is null) throw new ArgumentNullException(nameof(config), "the folder is not quantized; give a BitsAndBytesConfig");
        device ??= CPU;
        var computeDType = settings.ComputeDType == ScalarType.Float16 && device.type == DeviceType.CPU ? ScalarType.Float32 : settings.ComputeDType;
        using var checkpoint = SafetensorsCheckpoint.Open(modelDir);
        var model = ModelLoader.CreateMeta(modelConfig, dtype);
        try
        {
            Fill(model, checkpoint, settings, quantizeOnLoad: stored is null, computeDType, dtype, device);
            NativeHeap.Trim();
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.Device = device;
        model.eval();
        return model;
    }

    static void Fill(CausalLM model, SafetensorsCheckpoint checkpoint, BitsAndBytesConfig settings, bool quantizeOnLoad,
                     ScalarType computeDType, ScalarType dtype, Device device)
    {
        var parameters = model.named_parameters().Select(p => p.name).ToList();
        var names = new HashSet<string>(parameters, StringComparer.Ordinal);
        // Checkpoint key of every parameter; quant-state entries are claimed by their weight.
        var keyOf = new Dictionary<string, string>(StringComparer.Ordinal);
        var unexpected = new List<string>();
        var stateEntries = new HashSet<string>(StringComparer.Ordinal);
        foreach (var key in checkpoint.Tensors.Keys)
        {
            if (model.ParameterNameFor(key, names) is string name)
            {
                if (!keyOf.TryAdd(name, key))
                    throw new PeftSharpException($"{checkpoint.FilePathOf(key)}: tensor '{key}' maps to parameter '{name}', which another key already filled");
            }
            else if (Bnb4BitFormat.WeightKeyOfStateEntry(key) is string weightKey && checkpoint.Tensors.ContainsKey(weightKey)) stateEntries.Add(key);
            else if (!model.IsIgnorableCheckpointKey(key)) unexpected.Add(key);
        }
        ModelLoader.CheckCoverage(model, checkpoint, parameters.Where(n => !keyOf.ContainsKey(n)).ToList(), unexpected);

        using var _ = no_grad();
        var quantizable = QuantizedModels.Quantizable(model, settings).Select(l => l.Path).ToHashSet(StringComparer.Ordinal);
        var modules = ModuleParameters.ModulesByPath(model);
        var claimed = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (path, module) in modules)
        {
            if (module is not Linear linear) continue;
            string name = path + ".weight", key = keyOf[name];
            claimed.Add(name);
            if (Bnb4BitFormat.IsQuantized(checkpoint, key))
            {
                var q = Bnb4BitFormat.Read(checkpoint, key, device);
                try { linear.ReplaceWeight(q); }
                catch (PeftSharpException e) { q.Dispose(); throw new PeftSharpException($"{checkpoint.FilePathOf(key)}: tensor '{key}': {e.Message}"); }
                linear.ComputeDType = computeDType;
            }
            else if (quantizeOnLoad && quantizable.Contains(path))
            {
                CheckPlain(checkpoint, key, linear.weight.shape);
                using var scope = NewDisposeScope();
                // Quantized from the stored values (converted to float32 inside), before the next layer is read.
                var w = checkpoint.Read(key, device);
                linear.ReplaceWeight(Quantized4BitWeight.Quantize(linear.FanInFanOut ? w.t() : w, settings.Options));
                linear.ComputeDType = computeDType;
                scope.Dispose();
                NativeHeap.Trim();
            }
            else
            {
                CheckPlain(checkpoint, key, linear.weight.shape);
                linear.ReplaceWeight(null, empty(linear.weight.shape, dtype, device));
                checkpoint.ReadInto(key, linear.weight);
            }
        }
        foreach (var name in parameters)
        {
            if (claimed.Contains(name)) continue;
            string key = keyOf[name];
            var (owner, local) = ModuleParameters.Split(name);
            var meta = modules[owner].named_parameters(recurse: false).First(p => p.name == local).parameter;
            CheckPlain(checkpoint, key, meta.shape);
            var p = ModuleParameters.Replace(modules[owner], local, empty(meta.shape, dtype, device), meta.requires_grad);
            checkpoint.ReadInto(key, p);
        }
        // Stray quant-state entries (of a weight that is not a quantized linear layer) are a corrupt checkpoint.
        foreach (var entry in stateEntries)
        {
            var weightKey = Bnb4BitFormat.WeightKeyOfStateEntry(entry)!;
            var owner = keyOf.FirstOrDefault(kv => kv.Value == weightKey).Key;
            if (owner is null || modules[ModuleParameters.Split(owner).Owner] is not Linear { IsQuantized: true })
                throw new PeftSharpException($"{checkpoint.FilePathOf(entry)}: unexpected tensor '{entry}' (a 4-bit quant state of '{weightKey}', which is not a quantized linear weight)");
        }
    }

    /// <summary>
    /// A randomly initialised model (normal(0, 0.02) matrices and embeddings, unit norms, zero biases), built layer by
    /// layer like <see cref="Load"/>: with <paramref name="quantization"/> each linear layer is drawn in
    /// <paramref name="dtype"/> and quantized before the next one exists. For memory and speed measurements.
    /// </summary>
    public static CausalLM CreateRandom(ModelConfig config, ScalarType dtype, Device? device, BitsAndBytesConfig? quantization, long seed = 0)
    {
        device ??= CPU;
        var model = ModelLoader.CreateMeta(config, dtype);
        try
        {
            using var _ = no_grad();
            using var gen = new Generator((ulong)seed);
            var quantizable = quantization is null ? [] : QuantizedModels.Quantizable(model, quantization).Select(l => l.Path).ToHashSet(StringComparer.Ordinal);
            var modules = ModuleParameters.ModulesByPath(model);
            foreach (var (name, shape, requiresGrad) in model.named_parameters().Select(p => (p.name, p.parameter.shape, p.parameter.requires_grad)).ToList())
            {
                var (owner, local) = ModuleParameters.Split(name);
                using var scope = NewDisposeScope();
                Tensor Draw(long[] s) => randn(s, ScalarType.Float32, generator: gen).mul_(0.02).to(dtype, device);
                if (modules[owner] is Linear linear && local == "weight")
                {
                    if (quantizable.Contains(owner))
                    {
                        linear.ReplaceWeight(Quantized4BitWeight.Quantize(Draw([linear.OutFeatures, linear.InFeatures]), quantization!.Options));
                        linear.ComputeDType = quantization.ComputeDType;
                        scope.Dispose();
                        NativeHeap.Trim();
                    }
                    else linear.ReplaceWeight(null, Draw(shape));
                    continue;
                }
                bool norm = name.EndsWith("norm.weight", StringComparison.Ordinal) || name.Split('.').Any(s => s.StartsWith("ln_", StringComparison.Ordinal)) && local == "weight";
                var value = local == "bias" ? zeros(shape, dtype, device) : norm ? ones(shape, dtype, device) : Draw(shape);
                ModuleParameters.Replace(modules[owner], local, value, requiresGrad);
            }
            NativeHeap.Trim(); // the same for every mode, so full-precision and 4-bit models are measured alike
        }
        catch
        {
            model.Dispose();
            throw;
        }
        model.Device = device;
        model.eval();
        return model;
    }

    static void CheckPlain(SafetensorsCheckpoint checkpoint, string key, long[] shape)
    {
        var info = checkpoint.Tensors[key];
        if (!info.Shape.SequenceEqual(shape))
            throw new PeftSharpException(
                $"{checkpoint.FilePathOf(key)}: tensor '{key}' has shape [{string.Join(", ", info.Shape)}], expected [{string.Join(", ", shape)}] from config.json");
        if (info.ScalarType is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Float64))
            throw new PeftSharpException(
                $"{checkpoint.FilePathOf(key)}: tensor '{key}' has dtype {info.DType}, expected a floating-point dtype (F32, F16 or BF16)");
    }
}
