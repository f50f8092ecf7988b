// Writes a tiny, randomly initialised Llama-architecture model as a Hugging Face folder (config.json,
// model.safetensors, tokenizer.json, tokenizer_config.json) plus a small train.jsonl, so the other samples and CI
// run in seconds without downloading a model. Usage: dotnet run -- OUT_DIR
using PeftSharp.Models;
using PeftSharp.Tensors;
using PeftSharp.Tokenization;
using static TorchSharp.torch;

string outDir = args.Length > 0 ? args[0] : "tiny-llama";
var records = new (string Q, string A)[]
{
    ("What colour is the sky?", "Blue."), ("What colour is grass?", "Green."), ("What colour is snow?", "White."),
    ("What colour is coal?", "Black."), ("What colour is a lemon?", "Yellow."), ("What colour is a tomato?", "Red."),
};
string corpus = string.Concat(Enumerable.Repeat(string.Join("\n", records.Select(r => $"Q: {r.Q}\nA: {r.A}")), 4));

// A byte-level BPE tokenizer learned from the corpus (GPT-2 style, <|endoftext|> as BOS/EOS).
var (vocab, merges) = BpeTrainer.Train(corpus, merges: 120);
BpeTrainer.WriteTokenizer(outDir, vocab, merges);
int eos = ModelTokenizer.Load(outDir).EosTokenId ?? vocab.Count - 1;
File.WriteAllText(Path.Combine(outDir, "config.json"), $$"""
    {
      "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": {{vocab.Count}},
      "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
      "num_key_value_heads": 2, "max_position_embeddings": 128, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
      "hidden_act": "silu", "tie_word_embeddings": true, "bos_token_id": {{eos}}, "eos_token_id": {{eos}},
      "torch_dtype": "float32"
    }
    """);

// Random weights, saved under the names transformers uses.
using var model = ModelLoader.Create(ModelConfig.Load(outDir));
model.InitializeWeights(seed: 1);
// A fresh init (std 0.02) gives almost uniform predictions through the tied embedding; larger embeddings let a few
// LoRA steps in the samples visibly change them.
using (no_grad()) model.named_parameters().Single(p => p.name.EndsWith("embed_tokens.weight")).parameter.mul_(10);
SafetensorsWriter.Save(Path.Combine(outDir, "model.safetensors"),
    model.named_parameters().Select(p => new KeyValuePair<string, Tensor>(p.name, p.parameter.detach())),
    new Dictionary<string, string> { ["format"] = "pt" });

// Training data in one of the JSONL formats PeftSharp reads (prompt/completion: only the completion is learned).
File.WriteAllLines(Path.Combine(outDir, "train.jsonl"), records.Select(r =>
    System.Text.Json.JsonSerializer.Serialize(new { prompt = $"Q: {r.Q}\nA:", completion = $" {r.A}" })));
Console.WriteLine($"tiny model: {outDir} ({model.parameters().Sum(p => p.numel()):N0} parameters, vocabulary {vocab.Count})");
