using System.Text.Json.Serialization;
using PeftSharp.Peft;
using PeftSharp.Tuners.Lora;

namespace PeftSharp.Tests.Peft;

/// <summary>A LoRA-shaped config for another method, built only from the reusable machinery.</summary>
public sealed class FakeAdaLoraConfig : LoraConfig
{
    public FakeAdaLoraConfig() : base("ADALORA") => RankPattern = null; // AdaLoRA's rank_pattern defaults to None

    [JsonIgnore]
    public override string ExpectedPeftType => "ADALORA";

    [JsonPropertyName("target_r")]
    public int TargetR { get; set; } = 8;

    [JsonPropertyName("orth_reg_weight")]
    public double OrthRegWeight { get; set; } = 0.5;

    [JsonPropertyName("total_step")]
    public int? TotalStep { get; set; }

    public static FakeAdaLoraConfig LoadAda(string dir) => LoadFromDirectory<FakeAdaLoraConfig>(dir, false);
}

public class ConfigSubclassTests
{
    [Fact]
    public void Subclass_ReadsAndWritesItsOwnFields_AndChecksItsOwnPeftType()
    {
        using var tmp = new TempDir();
        string dir = tmp.WithConfig("{\"peft_type\": \"ADALORA\", \"target_modules\": [\"q\"], \"target_r\": 4, \"total_step\": 1000, \"orth_reg_weight\": 0.5}");
        var c = FakeAdaLoraConfig.LoadAda(dir);
        Assert.Equal(4, c.TargetR);
        Assert.Equal(1000, c.TotalStep);
        Assert.Empty(c.ExtensionData);
        string json = c.ToJson();
        Assert.Contains("\n  \"target_r\": 4,\n", json);
        Assert.Contains("\n  \"orth_reg_weight\": 0.5,\n", json);
        Assert.Contains("\n  \"rank_pattern\": null,\n", json);
        Assert.Contains("\n  \"peft_type\": \"ADALORA\",\n", json);

        var wrongType = Assert.Throws<PeftSharpException>(() => FakeAdaLoraConfig.LoadAda(tmp.WithConfig("{\"peft_type\": \"LORA\"}", "lora")));
        Assert.Contains("\"LORA\"", wrongType.Message);
        var wrongField = Assert.Throws<PeftSharpException>(() => FakeAdaLoraConfig.LoadAda(tmp.WithConfig("{\"peft_type\": \"ADALORA\", \"total_step\": \"x\"}", "bad")));
        Assert.Contains("field 'total_step' must be an integer or null", wrongField.Message);
    }
}
