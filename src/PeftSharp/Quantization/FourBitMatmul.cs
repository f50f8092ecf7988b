using TorchSharp;
using static TorchSharp.torch;

namespace PeftSharp.Quantization;

/// <summary>
/// y = x·Wᵀ + b with W held in 4 bits (bitsandbytes' <c>matmul_4bit</c>): W is dequantized to the compute dtype for
/// the product and dropped at once. When gradients are needed, a custom autograd node saves only the packed codes
/// and dequantizes W again in backward, so a training step never keeps every layer's full-precision weight alive.
/// Gradients flow to x (and to b when it is trainable), never to the 4-bit weight.
/// </summary>
public static class FourBitMatmul
{
    /// <summary>The output in x's dtype; the product runs in <paramref name="computeDType"/> (x, W and b cast to it).</summary>
    public static Tensor Linear(Tensor x, Tensor packed, FourBitQuantState state, Tensor? bias, ScalarType computeDType)
    {
        using var scope = NewDisposeScope();
        var inputDType = x.dtype;
        var xc = x.to_type(computeDType);
        var bc = bias?.to_type(computeDType);
        bool needsGraph = is_grad_enabled() && (x.requires_grad || bias is { requires_grad: true });
        Tensor y;
        if (needsGraph)
        {
            y = Node.apply(xc, new Saved(packed, state), bc!, computeDType);
        }
        else
        {
            var w = state.Dequantize(packed, computeDType);
            y = nn.functional.linear(xc, w, bc);
        }
        return y.to_type(inputDType).MoveToOuterDisposeScope();
    }

    /// <summary>What the node keeps for backward: the layer's packed codes (not a copy) and their state.</summary>
    sealed record Saved(Tensor Packed, FourBitQuantState State);

    sealed class Node : autograd.SingleTensorFunction<Node>
    {
        public override string Name => "MatMul4Bit";

        public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
        {
            var x = (Tensor)vars[0];
            var weight = (Saved)vars[1];
            var bias = vars[2] as Tensor;
            var dtype = (ScalarType)vars[3];
            ctx.save_data("weight", weight);
            ctx.save_data("bias", bias is not null);
            using var w = weight.State.Dequantize(weight.Packed, dtype);
            return nn.functional.linear(x, w, bias);
        }

        public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
        {
            var weight = (Saved)ctx.get_data("weight");
            bool hasBias = (bool)ctx.get_data("bias");
            Tensor gradX, gradBias;
            using (var scope = NewDisposeScope())
            {
                var w = weight.State.Dequantize(weight.Packed, gradOutput.dtype);
                gradX = gradOutput.matmul(w).MoveToOuterDisposeScope();
                gradBias = hasBias ? gradOutput.reshape(-1, gradOutput.shape[^1]).sum([0]).MoveToOuterDisposeScope() : null!;
            }
            return [gradX, null!, gradBias, null!];
        }
    }
}
