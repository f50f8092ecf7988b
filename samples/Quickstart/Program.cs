// PeftSharp's quickstart, the C# twin of PEFT's: load a Hugging Face model folder, add LoRA, train on a JSONL
// file, save the adapter in PEFT's format, load it again onto a fresh base model, generate.
// Usage: dotnet run -- MODEL_DIR [DATA.jsonl] [ADAPTER_OUT]
using PeftSharp.Inference;
using PeftSharp.Models;
using PeftSharp.Peft;
using PeftSharp.Tokenization;
using PeftSharp.Training;
using PeftSharp.Tuners.Lora;

string modelDir = args.Length > 0 ? args[0] : "tiny-llama";
string dataFile = args.Length > 1 ? args[1] : Path.Combine(modelDir, "train.jsonl");
string adapterDir = args.Length > 2 ? args[2] : "quickstart-adapter";

// Load (transformers' AutoModelForCausalLM.from_pretrained + AutoTokenizer.from_pretrained).
var tokenizer = ModelTokenizer.Load(modelDir);
using var model = ModelLoader.Load(modelDir);

// Add LoRA (PEFT's get_peft_model); the base weights are frozen.
var config = new LoraConfig { R = 8, LoraAlpha = 16, TargetModules = TargetModules.AllLinear };
var lora = LoraModel.Create(model, config, seed: 0);
Console.WriteLine(lora.ParameterReport());   // print_trainable_parameters()

// Train on a JSONL file (prompt/completion, instruction/input/output or chat messages).
var data = DataFiles.Load(dataFile, tokenizer, maxLength: 128);
var groups = ParameterGroups.DecayAndNoDecay(lora.TrainableParameters(), learningRate: 2e-2, weightDecay: 0.0);
var options = new TrainingOptions { Epochs = 40, BatchSize = 6 };
using (var trainer = new Trainer(model, groups, options, data.Examples, validation: data.Examples, padTokenId: tokenizer.PadTokenId ?? 0))
{
    double before = trainer.Evaluate();
    var result = trainer.Train();
    Console.WriteLine($"trained {result.Steps} steps: loss {before:F3} -> {trainer.Evaluate():F3}");
}

// Save (save_pretrained): adapter_config.json + adapter_model.safetensors, readable by Python PEFT.
AdapterFiles.Save(lora, adapterDir, baseModelNameOrPath: modelDir);

// Reload onto a fresh base model (PeftModel.from_pretrained) and generate greedily.
using var fresh = ModelLoader.Load(modelDir);
AdapterFiles.Load(fresh, adapterDir);
fresh.eval();
Console.Write("Q: What colour is the sky?\nA:");
new TextGenerator(fresh, tokenizer).Generate("Q: What colour is the sky?\nA:", new GenerationOptions(MaxNewTokens: 8), Console.Write);
Console.WriteLine();
