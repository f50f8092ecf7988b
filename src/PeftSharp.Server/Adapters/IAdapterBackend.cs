namespace PeftSharp.Server.Adapters;

/// <summary>How the rows of one adapter run in the engine's batches.</summary>
public enum RowMode
{
    /// <summary>Each row picks its own weights inside one shared forward (LoRA: gathered low-rank matrices).</summary>
    Gathered,
    /// <summary>The adapter acts on the prompt's forward only (soft prompts, prefixes); later steps are the base model's.</summary>
    PrefillOnly,
    /// <summary>The adapter's rows run as their own sub-batch with the adapter active ((IA)³, bottleneck, AdaLoRA...).</summary>
    OwnBatch,
}

/// <summary>
/// The one seam between the server and PeftSharp's adapter code: load a folder under a slot name, unload it, and run
/// forwards either with one adapter per batch row (<see cref="UseRows"/>) or with one adapter for every row
/// (<see cref="Use"/>). <see cref="PeftAdapterBackend"/> serves every adapter type PeftSharp reads.
/// Called on the engine thread only.
/// </summary>
public interface IAdapterBackend
{
    /// <summary>Loads the adapter folder under <paramref name="slot"/>; throws <see cref="PeftSharpException"/> naming what is wrong.</summary>
    void Load(string slot, string dir);

    void Unload(string slot);

    /// <summary>How rows of a loaded adapter run.</summary>
    RowMode ModeOf(string slot);

    /// <summary>
    /// Context positions a loaded adapter takes in front of every prompt (soft prompts' virtual tokens, prefix tuning's
    /// key/value prefix); 0 for methods that take none.
    /// </summary>
    int LeadingPositions(string slot);

    /// <summary>
    /// A loaded slot that must be unloaded before <paramref name="dir"/> can be loaded (a format that holds one adapter
    /// per model), or null.
    /// </summary>
    string? Blocker(string dir);

    /// <summary>While the scope lives, forwards use Gathered adapter rowSlots[i] for batch row i (null: the base model).</summary>
    IDisposable UseRows(IReadOnlyList<string?> rowSlots);

    /// <summary>While the scope lives, forwards use this one adapter for every row.</summary>
    IDisposable Use(string slot);
}
