#!/usr/bin/env python3
"""Render every *.jinja chat template in this folder the way Hugging Face transformers'
`apply_chat_template` does, and write the golden outputs to expected.json.

Mirrors transformers/src/transformers/utils/chat_template_utils.py (`_compile_jinja_template`,
`_render_with_assistant_indices`, `render_jinja_template`) and `apply_chat_template` in
tokenization_utils_base.py:

* env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[AssistantTracker, jinja2.ext.loopcontrols])
* env.filters["tojson"] = json.dumps wrapper (ensure_ascii=False by default, no HTML escaping)
* env.globals["raise_exception"] raises jinja2.exceptions.TemplateError(message)
* env.globals["strftime_now"] formats the current time -- here a FIXED instant (FIXED_NOW) so the
  output is reproducible.
* render(messages=..., tools=None, documents=None, add_generation_prompt=..., **special_tokens_map)
  `special_tokens_map` only contains the special tokens that are set on the tokenizer, so a token
  that the model does not have (e.g. Qwen2.5's bos_token) is *undefined* in the template, not None.
  We do not pass `additional_special_tokens` (transformers does, as a list; no template here uses it).
* Generation spans come from the `{% generation %}` block extension exactly like transformers'
  AssistantTracker: the template is rendered with `generate()`, and when a generation block ends
  its span is (len(text yielded so far), that + len(block text)).

Requires: Python 3, jinja2 >= 3.1 (generated with 3.1.6). Run from anywhere:
    python3 render_expected.py
"""

import datetime
import json
import os
import sys
from contextlib import contextmanager

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
FIXED_NOW = datetime.datetime(2026, 11, 22, 0, 0, 0)

# Special tokens per template (the tokenizer's special_tokens_map, minus additional_special_tokens).
# A token absent here is undefined in the template (transformers omits unset special tokens).
TOKENS = {
    "qwen2.5.jinja": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "qwen2.jinja": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "smollm2.jinja": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>", "pad_token": "<|im_end|>"},
    "smollm3.jinja": {"eos_token": "<|im_end|>", "pad_token": "<|im_end|>"},
    "llama3.jinja": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama3.1.jinja": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "llama3.2.jinja": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "mistral-v0.1.jinja": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "mixtral-v0.1.jinja": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "mistral-v0.3.jinja": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "mistral-nemo.jinja": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "zephyr.jinja": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"},
    "gemma.jinja": {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "phi3.jinja": {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<|endoftext|>"},
    "phi3.5.jinja": {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<|endoftext|>"},
    "hf-assistant-mask-test.jinja": {"eos_token": "<|im_end|>"},
}

A = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
]
B = [
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "6"},
]
C = [
    {"role": "user", "content": "  spaced  \n"},
    {"role": "assistant", "content": "  line one\nline two  "},
]
D = [
    {"role": "system", "content": "Sys"},
    {"role": "user", "content": "Ünïcödé ✓ \"quotes\" and \\backslash"},
    {"role": "assistant", "content": "ok"},
]
F = [
    {"role": "user", "content": "Hi"},
    {"role": "user", "content": "Hello again"},
]

# (case id, messages, add_generation_prompt)
CONVERSATIONS = [
    ("a", A, False),
    ("a", A, True),
    ("b", B, False),
    ("b", B, True),
    ("c", C, False),
    ("c", C, True),
    ("d", D, False),
    ("d", D, True),
    ("e1", B[:1], True),   # loss-masking prefix: [user]
    ("e2", B[:2], False),  # loss-masking prefix: [user, assistant]
    ("e3", B[:3], True),   # loss-masking prefix: [user, assistant, user]
    ("f", F, False),       # two user turns in a row (Mistral/Gemma alternation check)
]


class AssistantTracker(Extension):
    """Same as transformers' AssistantTracker: {% generation %}...{% endgeneration %} renders its
    body unchanged and, while a tracker is active, records the character span of that body."""

    tags = {"generation"}

    def __init__(self, environment):
        super().__init__(environment)
        environment.extend(activate_tracker=self.activate_tracker)
        self._rendered_blocks = None
        self._generation_indices = None

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    @jinja2.pass_eval_context
    def _generation_support(self, context, caller):
        rv = caller()
        if self.is_active():
            start_index = len("".join(self._rendered_blocks))
            end_index = start_index + len(rv)
            self._generation_indices.append((start_index, end_index))
        return rv

    def is_active(self):
        # Verbatim transformers logic: list truthiness, so a generation block that closes before
        # anything else has been yielded (rendered_blocks still empty) is NOT recorded.
        return self._rendered_blocks or self._generation_indices

    @contextmanager
    def activate_tracker(self, rendered_blocks, generation_indices):
        try:
            if self.is_active():
                raise ValueError("AssistantTracker should not be reused before closed")
            self._rendered_blocks = rendered_blocks
            self._generation_indices = generation_indices
            yield
        finally:
            self._rendered_blocks = None
            self._generation_indices = None


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return FIXED_NOW.strftime(fmt)


def make_env():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def has_generation_tag(source):
    import re

    return re.search(r"\{\%-?\s*generation\s*-?\%\}", source) is not None


def render(env, source, messages, add_generation_prompt, tokens):
    """Returns (text, spans). Always renders through generate() with the tracker active, exactly
    like transformers does when return_assistant_tokens_mask=True (the text is identical either way)."""
    template = env.from_string(source)
    blocks, spans = [], []
    with env.activate_tracker(blocks, spans):
        for block in template.generate(
            messages=messages,
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **tokens,
        ):
            blocks.append(block)
        text = "".join(blocks)
    return text, [list(s) for s in spans]


def main():
    names = sorted(n for n in os.listdir(HERE) if n.endswith(".jinja"))
    missing = [n for n in names if n not in TOKENS]
    if missing:
        sys.exit(f"no special-token entry for: {missing}")
    cases = []
    for name in names:
        with open(os.path.join(HERE, name), encoding="utf-8", newline="") as f:
            source = f.read()
        tokens = TOKENS[name]
        gen = has_generation_tag(source)
        for case_id, messages, agp in CONVERSATIONS:
            env = make_env()
            case = {
                "template": name,
                "case": case_id,
                "messages": messages,
                "add_generation_prompt": agp,
                # null = passed as Python None (defined); a missing key = undefined in the template
                "variables": dict(tokens, tools=None, documents=None),
                "strftime_now_fixed": FIXED_NOW.isoformat(),
                "expected": None,
                "error": None,
                "error_type": None,
                "generation_spans": None,
            }
            try:
                text, spans = render(env, source, messages, agp, tokens)
                case["expected"] = text
                if gen:
                    case["generation_spans"] = spans
            except Exception as e:  # record what jinja2 raises, like transformers would surface it
                case["error"] = str(e)
                case["error_type"] = type(e).__name__
            cases.append(case)
    out = os.path.join(HERE, "expected.json")
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
        f.write("\n")
    ok = sum(c["error"] is None for c in cases)
    print(f"wrote {len(cases)} cases ({ok} rendered, {len(cases) - ok} errors) to {out}")


if __name__ == "__main__":
    main()
