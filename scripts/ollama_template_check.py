"""Render the Modelfile TEMPLATEs llmtune writes with Go's text/template (Ollama's template
engine) and compare them with the chat templates' own Jinja rendering. Outside CI: needs a Go
toolchain (`apt-get install golang-go`); Ollama itself cannot run here.

    python scripts/ollama_template_check.py

Cases: llmtune's tiny template and SmolLM2's ChatML template (with its default system prompt),
over conversations with and without a system message, multi-turn, multi-line content.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Two\nlines?"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b {{ braces }}"},
     {"role": "user", "content": " c "}],
    [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "r"},
     {"role": "user", "content": "q2"}],
]


def main() -> int:
    from llmtune.models.builtin import load_tiny_tokenizer
    from llmtune.runs.modelfile import chat_template
    from test_gguf_modelfile import CHATML

    failures = 0
    for name, template_text in (("tiny", None), ("chatml (SmolLM2)", CHATML)):
        tok = load_tiny_tokenizer()
        if template_text:
            tok.chat_template = template_text
        go = chat_template(tok).text
        case = json.dumps({"template": go, "conversations": CONVERSATIONS})
        done = subprocess.run(["go", "run", str(ROOT / "scripts" / "ollama_template_check.go")], input=case,
                              capture_output=True, text=True)
        if done.returncode:
            print(f"{name}: Go refused the template: {done.stderr.strip()}")
            failures += 1
            continue
        rendered = json.loads(done.stdout)
        for conversation, text in zip(CONVERSATIONS, rendered):
            jinja = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
            same = text == jinja
            failures += not same
            print(f"{name}: {len(conversation)} messages: {'same text' if same else 'DIFFERENT'}")
            if not same:
                print(f"  go:    {text!r}\n  jinja: {jinja!r}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
