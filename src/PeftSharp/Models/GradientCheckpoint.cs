using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace PeftSharp.Models;

/// <summary>
/// Activation (gradient) checkpointing for one transformer block, as torch.utils.checkpoint's reentrant variant:
/// the forward runs without recording a graph and keeps only the block's input; backward runs the block again
/// with autograd on and back-propagates through that recomputation. Activation memory drops from every
/// intermediate of every block to one [B, T, H] input per block, for about one more forward of compute.
/// </summary>
/// <remarks>
/// <para>Built on TorchSharp's custom autograd functions (<c>torch.autograd.SingleTensorFunction</c>). The block's
/// parameters are not inputs of the function: the recomputation's own backward accumulates their gradients, as
/// in PyTorch. So that the function takes part in backward at all, its input is made to require grad when nothing
/// upstream does (frozen embeddings under an adapter; transformers' <c>enable_input_require_grads</c>).</para>
/// <para>torch's CPU generator state is saved at the forward and restored around the recomputation, so random
/// layers (adapter dropout) draw the same numbers twice. CUDA generator states are not replayed.</para>
/// <para>Backward on CPU runs on the thread that called backward, so the recomputation's temporaries are freed by
/// the dispose scope opened here.</para>
/// </remarks>
public static class GradientCheckpoint
{
    /// <summary>A block's forward: its input and the other tensors it reads (rotary tables, masks; may be null).</summary>
    public delegate Tensor Block(Tensor input, IReadOnlyList<Tensor?> extras);

    /// <summary>
    /// <paramref name="block"/>(<paramref name="input"/>, <paramref name="extras"/>), recomputed during backward.
    /// Extras are kept alive by autograd until then; gradients are not propagated into them.
    /// </summary>
    public static Tensor Run(Block block, Tensor input, params Tensor?[] extras)
    {
        if (!input.requires_grad) input = input.detach().requires_grad_(true);
        var args = new object?[2 + extras.Length];
        args[0] = block;
        args[1] = input;
        extras.CopyTo(args, 2);
        return CheckpointFunction.apply(args!);
    }

    /// <summary>Holds a tensor in the autograd context's non-tensor data (which warns about bare tensors).</summary>
    sealed class Holder(Tensor tensor) { public Tensor Tensor { get; } = tensor; }

    sealed class CheckpointFunction : SingleTensorFunction<CheckpointFunction>
    {
        public override string Name => nameof(GradientCheckpoint);

        // autograd calls this with gradient recording off (Function.apply).
        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            var block = (Block)vars[0];
            var tensors = vars.Skip(1).Select(v => v as Tensor).ToList();
            ctx.save_for_backward(tensors!);
            ctx.save_data("block", block);
            ctx.save_data("arity", vars.Length);
            ctx.save_data("rng", new Holder(random.get_rng_state().DetachFromDisposeScope()));
            return block(tensors[0]!, tensors.Skip(1).ToList());
        }

        public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
        {
            var block = (Block)ctx.get_data("block");
            using var rng = ((Holder)ctx.get_data("rng")).Tensor;
            Tensor inputGrad;
            using (var scope = NewDisposeScope())
            {
                var saved = ctx.get_saved_variables();
                var input = saved[0].detach().requires_grad_(true);
                var current = random.get_rng_state();
                random.set_rng_state(rng);
                try
                {
                    using (enable_grad())
                    {
                        var output = block(input, saved.Skip(1).ToList());
                        output.backward([gradOutput]);
                    }
                }
                finally
                {
                    random.set_rng_state(current);
                }
                inputGrad = input.grad!.MoveToOuterDisposeScope();
            }
            // Autograd copied the incoming gradient's reference; dropping ours now frees it as soon as autograd is done.
            gradOutput.Dispose();
            ReleaseReturned(inputGrad);
            // One gradient per argument of apply: only the block's input gets one.
            int arity = (int)ctx.get_data("arity");
            var grads = new List<Tensor>(arity);
            for (int i = 0; i < arity; i++) grads.Add(i == 1 ? inputGrad : null!);
            return grads;
        }
    }

    // Autograd keeps its own reference to a returned gradient; the previous block's one is released when the next
    // block's backward starts, so blocks do not pile up [B, T, H] gradients until the step's dispose scope ends.
    [ThreadStatic] static Tensor? _returned;

    static void ReleaseReturned(Tensor next)
    {
        _returned?.Dispose();
        _returned = next;
    }
}
