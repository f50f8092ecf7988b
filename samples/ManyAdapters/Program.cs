// Several LoRA adapters on one base model: load two, switch between them, combine them, and give each row of one
// batch its own adapter (PEFT's adapter_names). Usage: dotnet run -- MODEL_DIR
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Tuners.Lora;
using static TorchSharp.torch;

string modelDir = args.Length > 0 ? args[0] : "tiny-llama";
string work = Directory.CreateTempSubdirectory("peftsharp-many-adapters-").FullName;

// Two adapters to load. Trained ones come from Quickstart or `peftsharp train`; here they are made with random
// A and B (init_lora_weights = false) so that each visibly changes the output.
foreach (var (name, seed) in new[] { ("poet", 1L), ("pirate", 2L) })
{
    using var m = ModelLoader.Load(modelDir);
    var made = LoraModel.Create(m, new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = TargetModules.AllLinear, InitLoraWeights = InitLoraWeights.False }, seed: seed);
    AdapterFiles.Save(made, Path.Combine(work, name));
}

using var model = ModelLoader.Load(modelDir);
model.eval();
var lora = AdapterFiles.Load(model, Path.Combine(work, "poet"), "poet");   // PeftModel.from_pretrained(..., adapter_name="poet")
AdapterFiles.LoadAdapter(lora, Path.Combine(work, "pirate"), "pirate");    // model.load_adapter(..., adapter_name="pirate")

var ids = ModelTokenizer.Load(modelDir).Encode("Q: What colour is the sky?\nA:").Select(i => (long)i).ToArray();
using var _ = no_grad();
using var input = tensor(ids).unsqueeze(0);
Tensor LastLogits() => model.Forward(input)[0, -1];

Tensor baseOut; using (lora.DisableAdapters()) baseOut = LastLogits();
lora.SetAdapter("poet"); var poet = LastLogits();                          // set_adapter("poet")
lora.SetAdapter("pirate"); var pirate = LastLogits();
lora.AddWeightedAdapter(["poet", "pirate"], [0.5, 0.5], "blend", "cat");   // add_weighted_adapter(..., combination_type="cat")
lora.SetAdapter("blend"); var blend = LastLogits();
foreach (var (name, t) in new[] { ("poet", poet), ("pirate", pirate), ("blend", blend) })
    Console.WriteLine($"{name,-7} changes the next-token logits by up to {(t - baseOut).abs().max().item<float>():F4}");

// One batch, one adapter per row ("__base__": no adapter): same results as the separate runs above.
using var batch = input.repeat(3, 1);
Tensor rows; using (lora.UseRowAdapters(["poet", "__base__", "pirate"])) rows = model.Forward(batch)[.., -1];
double worst = new[] { (rows[0] - poet), (rows[1] - baseOut), (rows[2] - pirate) }.Max(d => d.abs().max().item<float>());
Console.WriteLine($"mixed batch [poet, base, pirate]: largest difference from the separate runs {worst:E1}");
Directory.Delete(work, recursive: true);
if (worst > 1e-4) { Console.Error.WriteLine("per-row adapters disagree with single-adapter runs"); return 1; }
return 0;
