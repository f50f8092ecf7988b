namespace PeftSharp.Federated;

/// <summary>What a client checking in is told.</summary>
public enum CheckInStatus
{
    /// <summary>Selected for the round: download the global adapter, train, upload.</summary>
    Train,
    /// <summary>Not now (the round is full, closed, or this client already reported): check in again later.</summary>
    Wait,
    /// <summary>Every round is done: stop.</summary>
    Done,
}

/// <summary>Why an upload was refused (or not).</summary>
public enum ReportOutcome
{
    /// <summary>The upload counts for this round.</summary>
    Accepted,
    /// <summary>The upload names another round than the open one.</summary>
    WrongRound,
    /// <summary>The client was not selected for this round.</summary>
    NotSelected,
    /// <summary>The client already uploaded in this round.</summary>
    AlreadyReported,
    /// <summary>The round has closed (all reported or the deadline passed).</summary>
    Closed,
}

/// <summary>
/// One round of a federated server, independent of the transport: the first K distinct clients that check in are
/// selected; the round ends when all K have reported, or at the deadline, counted from the first selection, with
/// whoever reported by then. A client that never uploads (crashed, disconnected) therefore delays the round by at most
/// the deadline and is simply left out of its aggregate. A selected client may check in again (after a restart) and is
/// told to train again; uploads after the round closed are refused. Thread-safe.
/// </summary>
public sealed class RoundCoordinator
{
    readonly object gate = new();
    readonly List<string> selected = [];
    readonly List<(ClientUpdate Update, string File)> reports = [];
    readonly TaskCompletionSource firstSelection = new(TaskCreationOptions.RunContinuationsAsynchronously);
    readonly TaskCompletionSource allReported = new(TaskCreationOptions.RunContinuationsAsynchronously);
    readonly TimeProvider time;
    long? firstSelectedAt;
    bool closed;

    /// <summary>Opens round <paramref name="round"/> for K = <paramref name="clientsPerRound"/> clients with a deadline counted from the first selection.</summary>
    public RoundCoordinator(int round, int clientsPerRound, TimeSpan deadline, TimeProvider? time = null)
    {
        if (clientsPerRound < 1) throw new ArgumentOutOfRangeException(nameof(clientsPerRound));
        (Round, ClientsPerRound, Deadline, this.time) = (round, clientsPerRound, deadline, time ?? TimeProvider.System);
    }

    /// <summary>The round number (1-based).</summary>
    public int Round { get; }
    /// <summary>K: how many clients the round selects.</summary>
    public int ClientsPerRound { get; }
    /// <summary>How long the round waits for uploads after its first selection.</summary>
    public TimeSpan Deadline { get; }

    /// <summary>The clients selected so far, in check-in order.</summary>
    public IReadOnlyList<string> Selected { get { lock (gate) return selected.ToList(); } }

    /// <summary>Names of the clients whose upload was accepted.</summary>
    public IReadOnlyList<string> Reported { get { lock (gate) return reports.Select(r => r.Update.Client).ToList(); } }

    /// <summary>True once the round stopped taking uploads.</summary>
    public bool Closed { get { lock (gate) return closed; } }

    /// <summary>Seconds left before the deadline (the whole deadline before anyone is selected).</summary>
    public double SecondsLeft
    {
        get
        {
            lock (gate)
                return firstSelectedAt is long t ? Math.Max(0, (Deadline - time.GetElapsedTime(t)).TotalSeconds) : Deadline.TotalSeconds;
        }
    }

    /// <summary>Selects the client if a slot is free; returns Train with its index among the selected, or Wait.</summary>
    public (CheckInStatus Status, int Index) CheckIn(string client)
    {
        lock (gate)
        {
            if (closed) return (CheckInStatus.Wait, -1);
            int index = selected.IndexOf(client);
            if (index >= 0)
                return reports.Any(r => r.Update.Client == client) ? (CheckInStatus.Wait, -1) : (CheckInStatus.Train, index);
            if (selected.Count >= ClientsPerRound) return (CheckInStatus.Wait, -1);
            selected.Add(client);
            if (firstSelectedAt is null)
            {
                firstSelectedAt = time.GetTimestamp();
                firstSelection.TrySetResult();
            }
            return (CheckInStatus.Train, selected.Count - 1);
        }
    }

    /// <summary>Records a selected client's update (and the file it came in) unless the round is closed or it already reported.</summary>
    public ReportOutcome Report(int round, ClientUpdate update, string file)
    {
        lock (gate)
        {
            if (round != Round) return ReportOutcome.WrongRound;
            if (closed) return ReportOutcome.Closed;
            if (!selected.Contains(update.Client)) return ReportOutcome.NotSelected;
            if (reports.Any(r => r.Update.Client == update.Client)) return ReportOutcome.AlreadyReported;
            reports.Add((update, file));
            if (reports.Count == ClientsPerRound) allReported.TrySetResult();
            return ReportOutcome.Accepted;
        }
    }

    /// <summary>
    /// Waits for the first selection, then for all K reports or the deadline, closes the round and returns the reports
    /// in check-in order. Uploads arriving later are refused.
    /// </summary>
    public async Task<IReadOnlyList<(ClientUpdate Update, string File)>> CloseAsync(CancellationToken cancellationToken)
    {
        await firstSelection.Task.WaitAsync(cancellationToken);
        var left = TimeSpan.FromSeconds(SecondsLeft);
        await Task.WhenAny(allReported.Task, Task.Delay(left, time, cancellationToken));
        cancellationToken.ThrowIfCancellationRequested();
        lock (gate)
        {
            closed = true;
            return reports.OrderBy(r => selected.IndexOf(r.Update.Client)).ToList();
        }
    }
}
