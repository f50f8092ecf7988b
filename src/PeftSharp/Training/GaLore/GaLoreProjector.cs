using static TorchSharp.torch;

namespace PeftSharp.Training.GaLore;

/// <summary>
/// GaLore's "std" projector for one m×n matrix, as galore-torch's <c>GaLoreProjector</c> computes it: for m ≥ n the
/// top-r right singular vectors of the gradient (P = Vh[:r], r×n; G ↦ G·Pᵀ, m×r), otherwise the top-r left
/// singular vectors (P = U[:, :r], m×r; G ↦ Pᵀ·G, r×n). The update is projected back with the same P and
/// multiplied by the scale. P is float32 and is recomputed by the optimizer every update_proj_gap steps.
/// </summary>
public static class GaLoreProjector
{
    /// <summary>True when a matrix of this shape is projected on the right (m ≥ n), as galore-torch decides.</summary>
    public static bool ProjectsRight(long rows, long columns) => rows >= columns;

    /// <summary>The shape of the low-rank gradient (and of Adam's moments) for an m×n matrix at rank r.</summary>
    public static long[] LowRankShape(long rows, long columns, int rank)
    {
        long r = Math.Min(rank, Math.Min(rows, columns));
        return ProjectsRight(rows, columns) ? [rows, r] : [r, columns];
    }

    /// <summary>The shape of the projector P for an m×n matrix at rank r.</summary>
    public static long[] ProjectorShape(long rows, long columns, int rank)
    {
        long r = Math.Min(rank, Math.Min(rows, columns));
        return ProjectsRight(rows, columns) ? [r, columns] : [rows, r];
    }

    /// <summary>P from the SVD of the float32 gradient <paramref name="gradient"/> (torch.linalg.svd, reduced).</summary>
    public static Tensor Compute(Tensor gradient, int rank)
    {
        using var scope = NewDisposeScope();
        var (u, _, vh) = linalg.svd(gradient, fullMatrices: false);
        long rows = gradient.shape[0], columns = gradient.shape[1];
        long r = Math.Min(rank, Math.Min(rows, columns));
        var p = ProjectsRight(rows, columns) ? vh[..(int)r, ..] : u[.., ..(int)r];
        return p.contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>The low-rank gradient: G·Pᵀ (right) or Pᵀ·G (left).</summary>
    public static Tensor Project(Tensor gradient, Tensor projector) =>
        ProjectsRight(gradient.shape[0], gradient.shape[1]) ? gradient.matmul(projector.t()) : projector.t().matmul(gradient);

    /// <summary>A low-rank update back in the matrix's space, times <paramref name="scale"/>: N·P (right) or P·N (left).</summary>
    public static Tensor ProjectBack(Tensor lowRank, Tensor projector, bool right, double scale) =>
        (right ? lowRank.matmul(projector) : projector.matmul(lowRank)).mul_(scale);
}
