using static TorchSharp.torch;

namespace PeftSharp.Tuners;

/// <summary>Checks the task ids a task-conditioned method receives; one-line errors.</summary>
internal static class TaskIdRange
{
    /// <summary>
    /// <paramref name="taskIds"/> as [<paramref name="batch"/>] int64 on the CPU (a single id is repeated); every id in
    /// 0 … <paramref name="tasks"/> − 1.
    /// </summary>
    public static Tensor Check(Tensor? taskIds, long batch, long tasks, string method)
    {
        if (taskIds is null)
            throw new PeftSharpException($"{method} needs a task id per example (the \"task_id\" field of the data, or --task-id); none was given");
        var ids = taskIds.to(ScalarType.Int64).cpu().flatten();
        if (ids.shape[0] == 1 && batch > 1) ids = ids.expand(batch);
        if (ids.shape[0] != batch)
            throw new PeftSharpException($"{method}: {ids.shape[0]} task ids for a batch of {batch} sequences");
        var values = ids.data<long>().ToArray();
        foreach (long id in values)
            if (id < 0 || id >= tasks)
                throw new PeftSharpException($"{method}: task id {id} is out of range; this adapter has num_tasks {tasks} (ids 0 … {tasks - 1})");
        return ids;
    }
}
