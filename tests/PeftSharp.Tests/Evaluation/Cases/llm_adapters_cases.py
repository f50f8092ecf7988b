"""Golden cases for PeftSharp's LLM-Adapters answer extraction, computed by LLM-Adapters' own functions.

Usage: python3 llm_adapters_cases.py PATH/TO/LLM-Adapters > llm_adapters_cases.json

PATH is a checkout of github.com/AGI-Edgerunners/LLM-Adapters (main branch). Only the functions named below are
taken from its evaluate.py and commonsense_evaluate.py (with the ast module, so torch and transformers are not
needed); the inputs are written here by hand. The output is committed; this script is kept to regenerate it.
"""
import ast
import json
import math
import re
import sys
from types import SimpleNamespace


def load_functions(path, names):
    tree = ast.parse(open(path, encoding="utf-8").read())
    module = ast.Module(body=[n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names], type_ignores=[])
    scope = {"re": re}
    exec(compile(module, path, "exec"), scope)
    return scope


root = sys.argv[1]
math_fns = load_functions(f"{root}/evaluate.py", {"extract_answer_number", "extract_answer_letter", "generate_prompt"})
cs_fns = load_functions(f"{root}/commonsense_evaluate.py", {"extract_answer", "generate_prompt"})

responses = [
    "The answer is 42.",
    "1,234 apples and 5,678 pears make 6,912.",
    "He lost -7 points, then gained 3.5, so the total is -3.5",
    "It costs $18.00 in all.",
    "First 12, then 30, so the answer is 18 dollars (was 20).",
    "",
    "no numbers here",
    "The value is 3. Done",
    "0.001 or .5 or 5.",
    "The answer is (D).",
    "After checking, the answer is B",
    "answer: e",
    "the correct answer is answer3",
    "answer1 and answer2 are wrong; answer4",
    "the correct answer is false",
    "untrue",
    "True",
    "solution2 is better than solution1",
    "the correct answer is ending4",
    "option2",
    "  the correct answer is option1\n\n### Response: option2",
    "1e5 items",
    "the answer is answer10",
    "٣ apples",
]

cases = []
for text in responses:
    number = math_fns["extract_answer_number"](SimpleNamespace(dataset="gsm8k"), text)
    letter = math_fns["extract_answer_letter"](SimpleNamespace(dataset="AQuA"), text)
    words = {d: cs_fns["extract_answer"](SimpleNamespace(dataset=d), text)
             for d in ["boolq", "piqa", "social_i_qa", "hellaswag", "winogrande", "ARC-Easy", "ARC-Challenge", "openbookqa"]}
    cases.append({"response": text, "number": "inf" if math.isinf(number) else repr(number), "letter": letter, "words": words})

prompts = [{"instruction": i, "prompt": cs_fns["generate_prompt"](i)} for i in ["Q?", "Line one\nline two", ""]]
assert all(math_fns["generate_prompt"](p["instruction"]) == p["prompt"] for p in prompts)
json.dump({"source": "AGI-Edgerunners/LLM-Adapters main: evaluate.py, commonsense_evaluate.py", "cases": cases, "prompts": prompts},
          sys.stdout, indent=1, ensure_ascii=False)
print()
