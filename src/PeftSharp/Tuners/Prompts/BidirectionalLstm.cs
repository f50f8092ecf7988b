using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PeftSharp.Tuners.Prompts;

/// <summary>
/// The bidirectional LSTM of P-tuning's <c>lstm_head</c> (PyTorch's <c>nn.LSTM(bidirectional=True, batch_first=True)</c>
/// run on one sequence), written with plain tensor ops so autograd sees every step. Parameters carry PyTorch's names:
/// <c>weight_ih_l{k}</c> [4E, in], <c>weight_hh_l{k}</c> [4E, E], <c>bias_ih_l{k}</c>, <c>bias_hh_l{k}</c> [4E], and the
/// same with <c>_reverse</c> for the backward direction; gate rows in the order i, f, g, o.
/// </summary>
/// <remarks>
/// Written by hand because TorchSharp 0.107's native <c>nn.LSTM</c> on this libtorch (2.10, CPU) returns different
/// float32 outputs when nothing requires grad (no_grad, or frozen parameters) than with autograd on; only the latter
/// follows PyTorch's documented equations. The prompt is computed both ways (training vs. saving and generation),
/// so the native module would save a prompt other than the one trained.
/// </remarks>
public sealed class BidirectionalLstm : nn.Module<Tensor, Tensor>
{
    readonly List<(Parameter Wih, Parameter Whh, Parameter Bih, Parameter Bhh)> cells = [];
    readonly long hidden;
    readonly double dropout;

    /// <param name="dropout">Dropout on each layer's output except the last, while training (PyTorch's <c>dropout</c>).</param>
    public BidirectionalLstm(string name, long input, long hidden, int layers, double dropout, Device device) : base(name)
    {
        this.hidden = hidden;
        this.dropout = dropout;
        for (int layer = 0; layer < layers; layer++)
        {
            long width = layer == 0 ? input : 2 * hidden;
            foreach (var suffix in new[] { "", "_reverse" })
            {
                Parameter New(string kind, params long[] shape)
                {
                    var p = new Parameter(zeros(shape, ScalarType.Float32, device));
                    register_parameter($"{kind}_l{layer}{suffix}", p);
                    return p;
                }
                // Registration order is PyTorch's: w_ih, w_hh, b_ih, b_hh per layer and direction.
                cells.Add((New("weight_ih", 4 * hidden, width), New("weight_hh", 4 * hidden, hidden),
                    New("bias_ih", 4 * hidden), New("bias_hh", 4 * hidden)));
            }
        }
    }

    /// <summary>PyTorch's LSTM init: every parameter U(±1/√hidden), drawn in registration order from <paramref name="gen"/>.</summary>
    public void ResetParameters(Generator? gen)
    {
        double bound = 1.0 / Math.Sqrt(hidden);
        using var _ = no_grad();
        foreach (var p in parameters())
            using (var u = rand(p.shape, ScalarType.Float32, generator: gen, device: p.device).mul_(2 * bound).sub_(bound)) p.copy_(u);
    }

    /// <summary>[T, in] → [T, 2E]: each step's forward hidden state followed by the backward one; zero initial state.</summary>
    public override Tensor forward(Tensor sequence)
    {
        using var scope = NewDisposeScope();
        var x = sequence;
        for (int layer = 0; layer < cells.Count / 2; layer++)
        {
            if (layer > 0 && dropout > 0) x = nn.functional.dropout(x, dropout, training);
            x = cat([Direction(x, cells[2 * layer], reverse: false), Direction(x, cells[2 * layer + 1], reverse: true)], 1);
        }
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>One direction of one layer: c = σ(f)·c + σ(i)·tanh(g), h = σ(o)·tanh(c), read forwards or backwards.</summary>
    Tensor Direction(Tensor x, (Parameter Wih, Parameter Whh, Parameter Bih, Parameter Bhh) cell, bool reverse)
    {
        long steps = x.shape[0];
        var inputGates = nn.functional.linear(x, cell.Wih, cell.Bih).add(cell.Bhh); // [T, 4E], all steps at once
        var h = zeros([hidden], x.dtype, x.device);
        var c = zeros([hidden], x.dtype, x.device);
        var outputs = new Tensor[steps];
        for (long step = 0; step < steps; step++)
        {
            long t = reverse ? steps - 1 - step : step;
            var gates = inputGates[t].add(matmul(cell.Whh, h)).chunk(4);
            c = sigmoid(gates[1]).mul(c).add(sigmoid(gates[0]).mul(tanh(gates[2])));
            h = sigmoid(gates[3]).mul(tanh(c));
            outputs[t] = h;
        }
        return stack(outputs);
    }
}
