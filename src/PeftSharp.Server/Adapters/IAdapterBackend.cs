namespace PeftSharp.Server.Adapters;

/// <summary>
/// The one seam between the server and PeftSharp's adapter code: load a folder under a slot name, unload it, and run
/// forwards with one adapter per batch row. <see cref="LoraAdapterBackend"/> is today's implementation; a registry
/// that loads any peft_type plugs in here without touching the engine or the endpoints.
/// Called on the engine thread only.
/// </summary>
public interface IAdapterBackend
{
    /// <summary>Loads the adapter folder under <paramref name="slot"/>; throws <see cref="PeftSharpException"/> naming what is wrong.</summary>
    void Load(string slot, string dir);

    void Unload(string slot);

    /// <summary>While the scope lives, forwards use adapter rowSlots[i] for batch row i (null: the base model).</summary>
    IDisposable UseRows(IReadOnlyList<string?> rowSlots);
}
