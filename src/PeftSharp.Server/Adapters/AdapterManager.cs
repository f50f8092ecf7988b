namespace PeftSharp.Server.Adapters;

/// <summary>The outcome of asking for an adapter to be resident before a request runs.</summary>
public enum EnsureResult { Ready, NotFound, Busy, Failed }

/// <summary>
/// Which adapters the server knows (name → folder) and which of them are loaded in slots, at most
/// <c>maxLoaded</c> at a time; beyond that the least recently used adapter that no running row uses is unloaded
/// (vLLM's LRU cache of LoRA slots); a format that holds one adapter per model evicts its resident adapter
/// (<see cref="IAdapterBackend.Blocker"/>). Names are the public ones from requests; slots ("s0", "s1", ...) are what
/// the backend sees, so any name a client uses is safe there. Loading and unloading happen on the engine thread,
/// between decode steps; registering and listing are safe from any thread.
/// </summary>
public sealed class AdapterManager(IAdapterBackend backend, int maxLoaded, AdapterPaths? adapterDir)
{
    sealed class Loaded(string slot)
    {
        public string Slot { get; } = slot;
        public long LastUsed { get; set; }
    }

    readonly object gate = new();
    readonly Dictionary<string, string> known = new(StringComparer.Ordinal);
    readonly Dictionary<string, Loaded> loaded = new(StringComparer.Ordinal);
    readonly HashSet<string> freeSlots = [];
    readonly HashSet<string> retired = []; // slots of unregistered adapters, unloaded once no row uses them
    int nextSlot;
    long clock;

    public AdapterPaths? AdapterDir => adapterDir;
    public int MaxLoaded => maxLoaded;

    /// <summary>Known adapter names with their folders, sorted by name.</summary>
    public IReadOnlyList<(string Name, string Dir, bool Loaded)> List()
    {
        lock (gate) return known.OrderBy(k => k.Key, StringComparer.Ordinal).Select(k => (k.Key, k.Value, loaded.ContainsKey(k.Key))).ToList();
    }

    /// <summary>Adapters resident in slots (retired ones still in use included).</summary>
    public int LoadedCount { get { lock (gate) return loaded.Count + retired.Count; } }

    /// <summary>Adds a name → folder mapping; false when the name is already known.</summary>
    public bool Register(string name, string dir)
    {
        lock (gate) return known.TryAdd(name, dir);
    }

    /// <summary>Forgets a name; its slot is unloaded at the first step in which no row uses it. False when unknown.</summary>
    public bool Unregister(string name)
    {
        lock (gate)
        {
            if (!known.Remove(name)) return false;
            if (loaded.Remove(name, out var l)) retired.Add(l.Slot);
            return true;
        }
    }

    /// <summary>
    /// Whether a request may name this adapter: it is known, or a folder of that name exists inside --adapter-dir
    /// (then it becomes known).
    /// </summary>
    public bool Resolve(string name)
    {
        lock (gate)
        {
            if (known.ContainsKey(name)) return true;
            if (adapterDir is null) return false;
            string? dir = adapterDir.Resolve(name);
            if (dir is null || !File.Exists(Path.Combine(dir, "adapter_config.json"))) return false;
            known[name] = dir;
            return true;
        }
    }

    /// <summary>Engine thread: makes the adapter resident (evicting if needed) and returns its slot. inUse: slots of running rows.</summary>
    public (EnsureResult Result, string? Slot, string? Error) Ensure(string name, IReadOnlySet<string> inUse)
    {
        string dir;
        if (!Resolve(name)) return (EnsureResult.NotFound, null, null);
        lock (gate)
        {
            if (!known.TryGetValue(name, out dir!)) return (EnsureResult.NotFound, null, null);
            if (loaded.TryGetValue(name, out var l)) { l.LastUsed = ++clock; return (EnsureResult.Ready, l.Slot, null); }
        }
        string? blocker;
        try { blocker = backend.Blocker(dir); }
        catch (Exception e) when (e is PeftSharpException or IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
        {
            return (EnsureResult.Failed, null, e.Message);
        }
        if (blocker is not null)
        {
            // A format that holds one adapter per model: the resident one leaves first, once no running row uses it.
            if (inUse.Contains(blocker)) return (EnsureResult.Busy, null, null);
            UnloadSlot(blocker);
        }
        if (LoadedCount >= maxLoaded && !Evict(inUse)) return (EnsureResult.Busy, null, null);
        string slot = TakeSlot();
        try
        {
            backend.Load(slot, dir);
        }
        catch (Exception e) when (e is PeftSharpException or IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
        {
            try { backend.Unload(slot); } catch (PeftSharpException) { } // a half-added adapter, if any
            freeSlots.Add(slot);
            return (EnsureResult.Failed, null, e.Message);
        }
        lock (gate)
        {
            if (known.TryGetValue(name, out var now) && now == dir) loaded[name] = new Loaded(slot) { LastUsed = ++clock };
            else retired.Add(slot); // unregistered while it was loading
        }
        return (EnsureResult.Ready, slot, null);
    }

    /// <summary>Engine thread: unloads adapters that were unregistered and that no running row uses (inUse: slots).</summary>
    public void Collect(IReadOnlySet<string> inUse)
    {
        List<string> gone;
        lock (gate) gone = retired.Where(s => !inUse.Contains(s)).ToList();
        foreach (var slot in gone)
        {
            backend.Unload(slot);
            lock (gate) retired.Remove(slot);
            freeSlots.Add(slot);
        }
    }

    bool Evict(IReadOnlySet<string> inUse)
    {
        Collect(inUse);
        if (LoadedCount < maxLoaded) return true;
        (string Name, string Slot)? victim;
        lock (gate)
            victim = loaded.Where(l => !inUse.Contains(l.Value.Slot)).OrderBy(l => l.Value.LastUsed)
                           .Select(l => ((string, string)?)(l.Key, l.Value.Slot)).FirstOrDefault();
        if (victim is not (string name, string slot)) return false;
        backend.Unload(slot);
        lock (gate) loaded.Remove(name);
        freeSlots.Add(slot);
        Evictions++;
        return true;
    }

    void UnloadSlot(string slot)
    {
        backend.Unload(slot);
        lock (gate)
        {
            if (!retired.Remove(slot))
            {
                var name = loaded.First(l => l.Value.Slot == slot).Key;
                loaded.Remove(name);
                Evictions++;
            }
        }
        freeSlots.Add(slot);
    }

    /// <summary>Adapters unloaded to make room (a metric).</summary>
    public long Evictions { get; private set; }

    string TakeSlot()
    {
        if (freeSlots.Count > 0)
        {
            string s = freeSlots.First();
            freeSlots.Remove(s);
            return s;
        }
        return $"s{nextSlot++}";
    }
}
