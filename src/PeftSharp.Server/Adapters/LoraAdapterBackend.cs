using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Server.Adapters;

/// <summary>
/// Adapters held by one <see cref="LoraModel"/> around the served base model (LoRA, DoRA, rsLoRA and the other
/// variants LoraModel reads). A mixed batch is one forward: the base layers run once over every row, and each LoRA
/// layer adds its rows' low-rank terms (<see cref="LoraModel.UseRowAdapters"/>).
/// </summary>
public sealed class LoraAdapterBackend(CausalLM model) : IAdapterBackend
{
    const string BaseRow = "__base__";
    LoraModel? lora;

    public void Load(string slot, string dir)
    {
        string type = PeftConfig.ReadPeftType(dir);
        if (type != PeftTypes.Lora)
            throw new PeftSharpException($"{dir}: peft_type {type} cannot be served yet (the server serves LORA adapters)");
        var config = LoraConfig.Load(dir);
        if (config.ModulesToSave is { Count: > 0 })
            throw new PeftSharpException($"{dir}: adapters with modules_to_save cannot be mixed per row in a batch");
        if (lora is null) lora = AdapterFiles.Load(model, dir, slot);
        else AdapterFiles.LoadAdapter(lora, dir, slot);
        lora.SetAdapter(); // nothing active outside row scopes: a forward without rows is the base model
        model.eval();
    }

    public void Unload(string slot) => lora?.DeleteAdapter(slot);

    public IDisposable UseRows(IReadOnlyList<string?> rowSlots)
    {
        if (lora is null || rowSlots.All(s => s is null)) return NoScope.Instance;
        return lora.UseRowAdapters(rowSlots.Select(s => s ?? BaseRow).ToList());
    }

    sealed class NoScope : IDisposable
    {
        public static readonly NoScope Instance = new();
        public void Dispose() { }
    }
}
