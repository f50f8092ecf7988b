namespace PeftSharp.Tuners;

/// <summary>Runs an action once, when disposed: the handle that tuners' Disable/DisableAdapters scopes return.</summary>
internal sealed class OnDispose(Action action) : IDisposable
{
    bool done;

    /// <summary>Runs the action the first time; later calls do nothing.</summary>
    public void Dispose()
    {
        if (done) return;
        done = true;
        action();
    }
}
