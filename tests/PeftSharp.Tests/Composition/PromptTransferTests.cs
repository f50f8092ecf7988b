using PeftSharp.Composition;
using PeftSharp.Tests.Cli;
using PeftSharp.Tests.Reference;
using static TorchSharp.torch;

namespace PeftSharp.Tests.Composition;

/// <summary>SPoT: prompt similarities against the formulas written as loops, the ranking command, and the transfer init.</summary>
public class PromptTransferTests
{
    static float[] Values(int count, int seed, double shift = 0)
    {
        var rnd = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (float)(rnd.NextDouble() - 0.5 + shift)).ToArray();
    }

    static string WritePrompt(string root, string name, float[] values, int n, int d, string type = "PROMPT_TUNING")
    {
        string dir = Path.Combine(root, name);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), $$"""{"peft_type": "{{type}}", "num_virtual_tokens": {{n}}, "token_dim": {{d}}, "task_type": "CAUSAL_LM"}""");
        NaiveSafetensors.Write(Path.Combine(dir, "adapter_model.safetensors"), [new NaiveTensor("prompt_embeddings", NaiveDType.F32, [n, d], values)]);
        return dir;
    }

    static double Cos(double[] u, double[] v)
    {
        double dot = 0, nu = 0, nv = 0;
        for (int i = 0; i < u.Length; i++) { dot += u[i] * v[i]; nu += u[i] * u[i]; nv += v[i] * v[i]; }
        return dot / Math.Sqrt(nu * nv);
    }

    static double[] Row(float[] p, int i, int d) => Enumerable.Range(0, d).Select(j => (double)p[i * d + j]).ToArray();
    static double[] MeanRow(float[] p, int n, int d) => Enumerable.Range(0, d).Select(j => Enumerable.Range(0, n).Average(i => (double)p[i * d + j])).ToArray();

    [Fact]
    public void SimilaritiesFollowTheFormulas()
    {
        const int n = 5, m = 3, d = 7;
        var a = Values(n * d, 1);
        var b = Values(m * d, 2, shift: 0.2);
        var c = Values(n * d, 3);
        using var ta = tensor(a, [n, d]);
        using var tb = tensor(b, [m, d]);
        using var tc = tensor(c, [n, d]);
        Assert.Equal(Cos(MeanRow(a, n, d), MeanRow(b, m, d)), PromptTransfer.Similarity(ta, tb, PromptSimilarityMetric.Mean), 6);
        double perToken = 0;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < m; j++) perToken += Cos(Row(a, i, d), Row(b, j, d));
        Assert.Equal(perToken / (n * m), PromptTransfer.Similarity(ta, tb, PromptSimilarityMetric.PerToken), 6);
        Assert.Equal(Cos(a.Select(x => (double)x).ToArray(), c.Select(x => (double)x).ToArray()), PromptTransfer.Similarity(ta, tc, PromptSimilarityMetric.Flat), 6);
        var e = Assert.Throws<PeftSharpException>(() => PromptTransfer.Similarity(ta, tb, PromptSimilarityMetric.Flat));
        Assert.Contains("one shape", e.Message);
    }

    [Fact]
    public void TheCommandRanksSourcesMostSimilarFirst()
    {
        using var dir = new TempDir();
        const int n = 4, d = 6;
        var target = Values(n * d, 10, shift: 0.3);
        // "near" is the target plus small noise, "far" is its negation, "other" is unrelated.
        var near = target.Zip(Values(n * d, 11)).Select(p => p.First + 0.05f * p.Second).ToArray();
        var far = target.Select(x => -x).ToArray();
        var other = Values(n * d, 12);
        string t = WritePrompt(dir.Path, "target", target, n, d);
        string[] sources = [WritePrompt(dir.Path, "far", far, n, d), WritePrompt(dir.Path, "near", near, n, d, "P_TUNING"), WritePrompt(dir.Path, "other", other, n, d)];
        var r = CliRunner.Run("prompt-similarity", "--source", sources[0], "--source", sources[1], "--source", sources[2], "--target", t, "--json");
        Assert.True(r.ExitCode == 0, r.Stderr);
        var ranking = r.Json().GetProperty("ranking").EnumerateArray().ToList();
        Assert.Equal(sources[1], ranking[0].GetProperty("source").GetString());
        Assert.Equal(sources[0], ranking[2].GetProperty("source").GetString());
        Assert.Equal(Cos(MeanRow(near, n, d), MeanRow(target, n, d)), ranking[0].GetProperty("similarity").GetDouble(), 6);
        Assert.Equal(-1.0, ranking[2].GetProperty("similarity").GetDouble(), 6);

        // A LoRA folder is no prompt: one line, exit 1.
        string lora = Path.Combine(dir.Path, "lora");
        Directory.CreateDirectory(lora);
        File.WriteAllText(Path.Combine(lora, "adapter_config.json"), """{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}""");
        r = CliRunner.Run("prompt-similarity", "--source", lora, "--target", t);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("has no virtual-token prompt", r.Stderr);
        Assert.Single(r.Stderr.Trim().Split('\n'));
    }

    [Fact]
    public void InitFromPromptCopiesTheSourcePromptOfTheSameShape()
    {
        using var dir = new TempDir();
        var values = Values(3 * 5, 20);
        string src = WritePrompt(dir.Path, "src", values, 3, 5);
        using var prompt = zeros(3, 5);
        PromptTransfer.InitFromPrompt(prompt, src);
        Assert.Equal(values, prompt.data<float>().ToArray());
        using var wrong = zeros(4, 5);
        var e = Assert.Throws<PeftSharpException>(() => PromptTransfer.InitFromPrompt(wrong, src));
        Assert.Contains("num_virtual_tokens", e.Message);
    }
}
