using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tests.Peft;

public class ModuleMatcherTests
{
    private static LoraConfig Names(params string[] names) => new() { TargetModules = TargetModules.FromNames(names) };

    [Theory]
    [InlineData("transformer.h.0.attn.c_attn", true)]
    [InlineData("c_attn", true)]
    [InlineData("transformer.h.0.attn.xc_attn", false)] // a suffix must start at a '.', not be a substring
    [InlineData("transformer.h.0.attn.c_attn_x", false)]
    [InlineData("transformer.h.0.attn", false)]
    [InlineData("transformer.h.0.attn.c_attn.dropout", false)]
    public void ListEntry_MatchesExactlyOrAsDotSuffix(string path, bool expected) =>
        Assert.Equal(expected, ModuleMatcher.IsTarget(Names("c_attn"), path));

    [Fact]
    public void MultiSegmentListEntry_MatchesAsSuffix()
    {
        var c = Names("attn.c_attn");
        Assert.True(ModuleMatcher.IsTarget(c, "transformer.h.0.attn.c_attn"));
        Assert.False(ModuleMatcher.IsTarget(c, "transformer.h.0.xattn.c_attn"));
    }

    [Fact]
    public void RegexString_MustMatchTheWholePath()
    {
        var c = new LoraConfig { TargetModules = TargetModules.FromRegex(@".*\.(q|v)_proj") };
        Assert.True(ModuleMatcher.IsTarget(c, "model.layers.0.self_attn.q_proj"));
        Assert.True(ModuleMatcher.IsTarget(c, "model.layers.0.self_attn.v_proj"));
        Assert.False(ModuleMatcher.IsTarget(c, "model.layers.0.self_attn.k_proj"));
        Assert.False(ModuleMatcher.IsTarget(c, "model.layers.0.self_attn.q_proj.lora_A")); // fullmatch, not search
        Assert.False(ModuleMatcher.IsTarget(c, "model.layers.0.self_attn.q_proj\n"));

        var plain = new LoraConfig { TargetModules = TargetModules.FromRegex("q_proj") };
        Assert.False(ModuleMatcher.IsTarget(plain, "model.q_proj")); // a string is a regex, not a suffix
        Assert.True(ModuleMatcher.IsTarget(plain, "q_proj"));

        // alternation: fullmatch tries every branch against the whole path
        var alt = new LoraConfig { TargetModules = TargetModules.FromRegex(@"a|model\.fc") };
        Assert.True(ModuleMatcher.IsTarget(alt, "model.fc"));
        Assert.False(ModuleMatcher.IsTarget(alt, "ab"));

        // Python named-group syntax works
        var named = new LoraConfig { TargetModules = TargetModules.FromRegex(@"(?P<blk>h)\.\d+\.attn\.c_attn") };
        Assert.True(ModuleMatcher.IsTarget(named, "h.3.attn.c_attn"));
    }

    [Fact]
    public void ExcludeModules_WinsOverTargets_WithTheSameRules()
    {
        var list = new LoraConfig { TargetModules = TargetModules.FromNames("q_proj", "v_proj"), ExcludeModules = TargetModules.FromNames("layers.0.self_attn.q_proj") };
        Assert.Equal(ModuleMatch.Excluded, ModuleMatcher.Match(list, "model.layers.0.self_attn.q_proj"));
        Assert.Equal(ModuleMatch.Targeted, ModuleMatcher.Match(list, "model.layers.10.self_attn.q_proj")); // suffix, not substring
        Assert.Equal(ModuleMatch.Targeted, ModuleMatcher.Match(list, "model.layers.0.self_attn.v_proj"));

        var regex = new LoraConfig { TargetModules = TargetModules.FromNames("q_proj"), ExcludeModules = TargetModules.FromRegex(@".*\.layers\.[01]\..*") };
        Assert.Equal(ModuleMatch.Excluded, ModuleMatcher.Match(regex, "model.layers.1.self_attn.q_proj"));
        Assert.Equal(ModuleMatch.Targeted, ModuleMatcher.Match(regex, "model.layers.2.self_attn.q_proj"));
        Assert.Equal(ModuleMatch.NotTargeted, ModuleMatcher.Match(regex, "model.layers.2.self_attn.k_proj"));
    }

    [Fact]
    public void ModulesToSave_AreNeverTargeted()
    {
        var c = new LoraConfig { TargetModules = TargetModules.FromRegex(".*"), ModulesToSave = ["score"] };
        Assert.Equal(ModuleMatch.Excluded, ModuleMatcher.Match(c, "score"));
        Assert.Equal(ModuleMatch.Excluded, ModuleMatcher.Match(c, "model.score"));
        Assert.Equal(ModuleMatch.Excluded, ModuleMatcher.Match(c, "model.score.dense"));
        Assert.Equal(ModuleMatch.Targeted, ModuleMatcher.Match(c, "model.scorer"));
    }

    [Theory]
    // GPT-2 layout: transformer.h.{i}
    [InlineData("h", "transformer.h.3.attn.c_attn", true)]
    [InlineData("h", "transformer.h.4.attn.c_attn", false)]
    [InlineData(null, "transformer.h.3.attn.c_attn", true)]
    [InlineData(null, "transformer.h.13.attn.c_attn", false)]
    [InlineData("layers", "transformer.h.3.attn.c_attn", false)] // pattern names another list: no index found
    public void LayersToTransform_GptStyle(string? pattern, string path, bool expected)
    {
        var c = new LoraConfig { TargetModules = TargetModules.FromNames("c_attn"), LayersToTransform = new[] { 0, 3 } };
        if (pattern is not null) c.LayersPattern = pattern;
        Assert.Equal(expected, ModuleMatcher.IsTarget(c, path));
    }

    [Fact]
    public void LayersToTransform_LlamaStyle_SingleIndexAndPatternList()
    {
        var c = new LoraConfig { TargetModules = TargetModules.FromNames("q_proj", "w1"), LayersToTransform = 1, LayersPattern = new[] { "blocks", "layers" } };
        Assert.True(ModuleMatcher.IsTarget(c, "model.layers.1.self_attn.q_proj"));
        Assert.False(ModuleMatcher.IsTarget(c, "model.layers.0.self_attn.q_proj"));
        Assert.False(ModuleMatcher.IsTarget(c, "model.layers.11.self_attn.q_proj"));
        Assert.False(ModuleMatcher.IsTarget(c, "q_proj.x")); // not a target at all

        // MoE: the layer index is the first numbered segment, not the expert index
        var moe = new LoraConfig { TargetModules = TargetModules.FromNames("w1"), LayersToTransform = new[] { 1 } };
        Assert.True(ModuleMatcher.IsTarget(moe, "model.layers.1.experts.0.w1"));
        moe.LayersToTransform = new[] { 0 };
        Assert.False(ModuleMatcher.IsTarget(moe, "model.layers.1.experts.0.w1"));
        Assert.Equal(1, (int)ModuleMatcher.LayerIndex(moe, "model.layers.1.experts.0.w1")!.Value);

        // an empty list means "all layers", as in PEFT
        moe.LayersToTransform = Array.Empty<int>();
        Assert.True(ModuleMatcher.IsTarget(moe, "model.layers.7.experts.0.w1"));
    }

    [Fact]
    public void LayersToTransform_IsNotAppliedToAnExactListMatch_AsInPeft()
    {
        var c = new LoraConfig { TargetModules = TargetModules.FromNames("transformer.h.4.attn.c_attn"), LayersToTransform = 3 };
        Assert.True(ModuleMatcher.IsTarget(c, "transformer.h.4.attn.c_attn"));
    }

    [Fact]
    public void RankAndAlphaPattern_FirstMatchingKeyWins_SuffixRegex()
    {
        var c = new LoraConfig
        {
            TargetModules = TargetModules.FromNames("q_proj", "v_proj", "k_proj"),
            R = 8,
            LoraAlpha = 16,
            RankPattern = new(StringComparer.Ordinal) { ["q_proj"] = 4, [@"layers\.0\.self_attn\.q_proj"] = 32, [@"layers\.[0-9]+\.self_attn\.v_proj"] = 2 },
            AlphaPattern = new(StringComparer.Ordinal) { [@"layers\.0\..*"] = 64, ["v_proj"] = 4 },
        };
        // dictionary order decides, not specificity: "q_proj" comes first
        Assert.Equal(4, ModuleMatcher.RankFor(c, "model.layers.0.self_attn.q_proj"));
        Assert.Equal(2, ModuleMatcher.RankFor(c, "model.layers.12.self_attn.v_proj"));
        Assert.Equal(8, ModuleMatcher.RankFor(c, "model.layers.0.self_attn.k_proj"));
        Assert.Equal(8, ModuleMatcher.RankFor(c, "model.layers.0.self_attn.xq_proj")); // suffix at a '.', not substring
        Assert.Equal(8, ModuleMatcher.RankFor(c, "model.layers.0.self_attn.q_proj.base")); // anchored at the end

        Assert.Equal(64.0, ModuleMatcher.AlphaFor(c, "model.layers.0.self_attn.v_proj"));
        Assert.Equal(4.0, ModuleMatcher.AlphaFor(c, "model.layers.3.self_attn.v_proj"));
        Assert.Equal(16.0, ModuleMatcher.AlphaFor(c, "model.layers.3.self_attn.k_proj"));

        // reversed order: the more specific key now comes first
        c.RankPattern = new(StringComparer.Ordinal) { [@"layers\.0\.self_attn\.q_proj"] = 32, ["q_proj"] = 4 };
        Assert.Equal(32, ModuleMatcher.RankFor(c, "model.layers.0.self_attn.q_proj"));
        Assert.Equal(4, ModuleMatcher.RankFor(c, "model.layers.1.self_attn.q_proj"));
    }

    [Fact]
    public void Scaling_IsAlphaOverR_OrOverSqrtRWithRsLora()
    {
        var c = new LoraConfig { TargetModules = TargetModules.FromNames("q"), R = 16, LoraAlpha = 32 };
        Assert.Equal(2.0, ModuleMatcher.Scaling(c, "m.q"));
        c.UseRslora = true;
        Assert.Equal(8.0, ModuleMatcher.Scaling(c, "m.q"));
        c.RankPattern = new(StringComparer.Ordinal) { ["q"] = 4 };
        c.AlphaPattern = new(StringComparer.Ordinal) { ["q"] = 6 };
        Assert.Equal(3.0, ModuleMatcher.Scaling(c, "m.q"));
        c.UseRslora = false;
        Assert.Equal(1.5, ModuleMatcher.Scaling(c, "m.q"));
        c.R = 3;
        c.RankPattern = null;
        c.AlphaPattern = null;
        c.LoraAlpha = 8;
        Assert.Equal(8.0 / 3.0, ModuleMatcher.Scaling(c, "m.q"));
    }

    [Fact]
    public void AllLinear_MustBeExpandedFirst_AndExcludesTheOutputLayer()
    {
        var c = new LoraConfig { TargetModules = TargetModules.FromRegex("ALL-LINEAR") };
        Assert.True(c.TargetModules.IsAllLinear);
        Assert.Throws<InvalidOperationException>(() => ModuleMatcher.IsTarget(c, "h.0.attn.c_attn"));

        string[] linear = ["h.0.attn.c_attn", "h.0.attn.c_proj", "h.0.mlp.c_fc", "lm_head"];
        Assert.True(ModuleMatcher.ExpandAllLinear(c, linear, excludedPaths: ["lm_head"]));
        Assert.Equal(["h.0.attn.c_attn", "h.0.attn.c_proj", "h.0.mlp.c_fc"], c.TargetModules!.Names!);
        Assert.True(ModuleMatcher.IsTarget(c, "h.0.mlp.c_fc"));
        Assert.False(ModuleMatcher.IsTarget(c, "lm_head"));
        Assert.False(ModuleMatcher.ExpandAllLinear(c, linear));
    }

    [Fact]
    public void NoTargetModules_IsAnErrorUnlessTargetParametersAreSet()
    {
        Assert.Throws<PeftSharpException>(() => ModuleMatcher.IsTarget(new LoraConfig(), "a.b"));
        Assert.False(ModuleMatcher.IsTarget(new LoraConfig { TargetParameters = ["experts.w"] }, "a.b"));
    }

    [Fact]
    public void InvalidRegex_IsAPeftSharpExceptionNamingTheField()
    {
        var c = new LoraConfig { TargetModules = TargetModules.FromRegex("(unclosed") };
        var ex = Assert.Throws<PeftSharpException>(() => ModuleMatcher.IsTarget(c, "a"));
        Assert.Contains("'target_modules'", ex.Message);
    }

    [Fact]
    public void Defaults_FollowPeftsMapping()
    {
        Assert.Equal(["c_attn"], LoraDefaults.TargetModulesFor("gpt2")!.Names!);
        foreach (var t in new[] { "llama", "mistral", "qwen2" })
            Assert.Equal(["q_proj", "v_proj"], LoraDefaults.TargetModulesFor(t)!.Names!);
        Assert.Equal(["query_key_value"], LoraDefaults.TargetModulesFor("falcon")!.Names!);
        Assert.Equal(["q", "v"], LoraDefaults.TargetModulesFor("t5")!.Names!);
        Assert.True(LoraDefaults.TargetModulesFor("gemma4")!.IsRegex);
        Assert.Null(LoraDefaults.TargetModulesFor("GPT2")); // case-sensitive, as PEFT's dict
        Assert.Null(LoraDefaults.TargetModulesFor("no-such-model"));

        var c = new LoraConfig();
        LoraDefaults.ApplyTo(c, "gpt2");
        Assert.True(ModuleMatcher.IsTarget(c, "transformer.h.0.attn.c_attn"));
        Assert.Throws<PeftSharpException>(() => LoraDefaults.ApplyTo(new LoraConfig(), "no-such-model"));
    }
}
