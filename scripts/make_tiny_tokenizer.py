"""Build the small byte-level BPE tokenizer shipped for the tiny built-in models.

Run once; the output (llmtune/assets/tiny_tokenizer/) is committed so tests never train
or download a tokenizer. Trained on the bundled SST-2 subset and alpaca demo text.
    python scripts/make_tiny_tokenizer.py
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "llmtune" / "assets" / "tiny_tokenizer"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
# Assistant turns are wrapped in generation markers so trl's assistant-only loss works too.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<s>assistant\n{% generation %}{{ m['content'] }}</s>{% endgeneration %}\n"
    "{% else %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def corpus() -> list[str]:
    lines = []
    sst = ROOT / "recipes" / "data" / "sst2_train.tsv"
    lines += [l.split("\t")[0] for l in sst.read_text().splitlines()[1:3001]]
    alpaca = json.loads((ROOT.parent / "shared" / "data" / "llamafactory_demo" / "alpaca_en_demo.json").read_text())
    for row in alpaca[:400]:
        lines += [row["instruction"], row["input"], row["output"]]
    return [l for l in lines if l]


def main() -> None:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", chat_template=CHAT_TEMPLATE)
    OUT.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(OUT)
    print(f"wrote {OUT} (vocab {len(fast)})")


if __name__ == "__main__":
    main()
