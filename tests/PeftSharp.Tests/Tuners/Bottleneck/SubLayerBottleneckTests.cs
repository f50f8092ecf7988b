using System.Text.Json.Nodes;
using PeftSharp.Tuners.Bottleneck;
using static PeftSharp.Tests.Tuners.LoraTestKit;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Tuners.Bottleneck;

/// <summary>AdapterHub's sub-layer adapter math against plain loops, for each preset and the layer-norm options.</summary>
public class SubLayerBottleneckTests
{
    const int H = 6, Rows = 5;

    static SubLayerBottleneck Make(AdapterHubConfig config, int d, int seed)
    {
        var a = new SubLayerBottleneck(config, H, d, CPU, new Generator((ulong)seed));
        using (no_grad()) foreach (var p in a.parameters()) if (p.dim() == 2) p.normal_(0, 0.4); else p.normal_(0.1, 0.3);
        return a;
    }

    static double[] Row(float[] flat, int r) => flat.Skip(r * H).Take(H).Select(v => (double)v).ToArray();

    static double[] Affine(float[] m, float[] b, double[] v, int rows)
    {
        var y = new double[rows];
        for (int r = 0; r < rows; r++) { y[r] = b[r]; for (int k = 0; k < v.Length; k++) y[r] += m[r * v.Length + k] * v[k]; }
        return y;
    }

    static double[] LayerNorm(double[] v, float[] w, float[] b)
    {
        double mean = v.Average(), var = v.Select(x => (x - mean) * (x - mean)).Average();
        return v.Select((x, i) => (x - mean) / Math.Sqrt(var + 1e-5) * w[i] + b[i]).ToArray();
    }

    static double[] Add(double[] a, double[] b) => a.Zip(b, (x, y) => x + y).ToArray();

    [Theory]
    [InlineData("houlsby")]
    [InlineData("pfeiffer")]
    [InlineData("parallel")]
    public void PresetsMatchTheirFormulas(string preset)
    {
        var config = AdapterHubConfig.FromPresetName(preset);
        int d = config.BottleneckSize(H, 0);
        Assert.Equal(preset == "parallel" ? 3 : 1, d); // 6 // 2 = 3; 6 // 16 = 0 → at least 1
        var adapter = Make(config, d, 1);
        var h = randn(Rows, H);
        var o = randn(Rows, H);
        var got = Values(adapter.Apply(h, o));
        float[] hs = Values(h), os = Values(o);
        float[] dw = Values(adapter.adapter_down.named_parameters().First(p => p.name == "0.weight").parameter);
        float[] db = Values(adapter.adapter_down.named_parameters().First(p => p.name == "0.bias").parameter);
        float[] uw = Values(adapter.adapter_up.weight), ub = Values(adapter.adapter_up.bias!);
        double s = preset == "parallel" ? 4.0 : 1.0;
        Func<double, double> act = preset == "houlsby" ? x => x / (1 + Math.Exp(-x)) : x => Math.Max(0, x);
        double[] F(double[] x) => Affine(uw, ub, Affine(dw, db, x, d).Select(act).ToArray(), H).Select(v => s * v).ToArray();
        for (int r = 0; r < Rows; r++)
        {
            double[] hr = Row(hs, r), or = Row(os, r);
            double[] want = preset switch
            {
                "houlsby" => Add(Add(hr, or), F(or)),
                "pfeiffer" => Add(Add(hr, or), F(Add(or, hr))),
                _ => Add(Add(hr, or), F(hr)),
            };
            for (int j = 0; j < H; j++) Assert.Equal(want[j], got[r * H + j], 1e-4);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LayerNormsAndChannelScalingMatchLoops(bool adapterResidualBeforeLn)
    {
        var config = AdapterHubConfig.Houlsby(3).With(("ln_before", true), ("ln_after", true), ("scaling", "channel"),
            ("adapter_residual_before_ln", adapterResidualBeforeLn), ("non_linearity", "tanh"));
        var adapter = Make(config, 2, 2);
        Assert.NotNull(adapter.NormBefore);
        var names = adapter.named_parameters().Select(p => p.name).ToHashSet();
        Assert.Contains("adapter_down.0.weight", names); // the LayerNorm
        Assert.Contains("adapter_down.1.weight", names); // the down-projection
        Assert.Contains("adapter_norm_after.bias", names);
        Assert.Contains("scaling", names);
        var h = randn(Rows, H);
        var o = randn(Rows, H);
        var got = Values(adapter.Apply(h, o));
        float[] P(string n) => Values(adapter.named_parameters().First(p => p.name == n).parameter);
        float[] scale = P("scaling");
        double[] F(double[] x)
        {
            var n = LayerNorm(x, P("adapter_down.0.weight"), P("adapter_down.0.bias"));
            var mid = Affine(P("adapter_down.1.weight"), P("adapter_down.1.bias"), n, 2).Select(Math.Tanh).ToArray();
            return Affine(P("adapter_up.weight"), P("adapter_up.bias"), mid, H).Select((v, i) => v * scale[i]).ToArray();
        }
        for (int r = 0; r < Rows; r++)
        {
            double[] hr = Row(Values(h), r), or = Row(Values(o), r);
            var a = F(or);
            double[] stream = adapterResidualBeforeLn
                ? LayerNorm(Add(a, or), P("adapter_norm_after.weight"), P("adapter_norm_after.bias"))
                : Add(LayerNorm(a, P("adapter_norm_after.weight"), P("adapter_norm_after.bias")), or);
            var want = Add(stream, hr);
            for (int j = 0; j < H; j++) Assert.Equal(want[j], got[r * H + j], 1e-4);
        }
    }

    [Fact]
    public void ZeroInitialisedUpProjectionLeavesTheStreamUnchanged()
    {
        foreach (var config in new[] { AdapterHubConfig.Houlsby(2).With(("init_weights", "mam_adapter")), AdapterHubConfig.Pfeiffer(2).With(("init_weights", "mam_adapter")), AdapterHubConfig.Parallel() })
        {
            var adapter = new SubLayerBottleneck(config, H, 3, CPU, new Generator(3));
            var h = randn(Rows, H);
            var o = randn(Rows, H);
            Assert.True(adapter.Apply(h, o).allclose(h.add(o), 0, 1e-6));
        }
    }

    [Fact]
    public void UnsupportedFieldsAreOneLineErrorsNamingTheField()
    {
        foreach (var (field, value) in new (string, JsonNode?)[] { ("use_gating", true), ("phm_layer", true), ("inv_adapter", "nice"), ("non_linearity", "cube"), ("residual_before_ln", "post_add"), ("scaling", "weird") })
        {
            var ex = Assert.Throws<PeftSharpException>(() => AdapterHubConfig.Houlsby().With((field, value)));
            Assert.Contains($"'config.{field}'", ex.Message);
            Assert.DoesNotContain('\n', ex.Message);
        }
    }
}
