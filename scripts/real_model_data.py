"""The data of docs/real-model.md's table (scripts/real_model_table.py), built from bundled data
only (recipes/data, and ../shared/data for the real preference pairs), with fixed seeds.

Every held-out set is drawn once, before anything trains, and no setting is chosen on it: the
settings of each row were fixed in advance (literature values), or chosen on a separate
selection slice of the training data (named where it applies).

Tasks:
- AG News topics as instructions (SFT, the chain): "What is the topic of this news article?"
  and the article; the answer is one label word (World, Sports, Business, Sci/Tech), a label set
  the shipped model does not use: it answers in sentences ("The topic of this news article is
  ..."), so exact match starts at 0. Train rows: the bundled 2,000 AG News training rows,
  shuffled (seed 0), taken from the front; rows 1,800-1,999 of that order are the selection
  slice. Held out: 200 of the bundled test rows, 50 per class (seed 0).
- SST-2 label words as preferences (DPO, KTO, ORPO, the reward model, online RL): "Is this
  review positive or negative? Answer with one word." and the sentence; chosen = the right word,
  rejected = the other. Balanced (half the pairs prefer each word) and the two words have the
  same length (8 letters, one token each), so neither the class prior nor length can pass for
  learning: the majority, shorter and longer baselines are all 0.5. Train: bundled training
  phrases of 6 words or more (seed 0); held out: 200 of the 872 dev sentences, 100 per class.
- HH-RLHF harmless (../shared/data): transcripts turned into chat messages (Human -> user,
  Assistant -> assistant), 20% held out (seed 0).
- LLaMA-Factory's DPO demo (../shared/data): 300 ShareGPT pairs, 20% held out (seed 0).
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "recipes" / "data"
TOPIC = "What is the topic of this news article?"
TOPICS = ["World", "Sports", "Business", "Sci/Tech"]
SENTIMENT = "Is this review positive or negative? Answer with one word."
WORDS = ["negative", "positive"]


def read_tsv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def shuffled(rows: list, seed: int = 0) -> list:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


def balanced(rows: list[dict], key, per_class: int, seed: int = 0) -> list[dict]:
    """`per_class` rows of each class (seeded draw), in a seeded order."""
    out = []
    for value in sorted({key(r) for r in rows}):
        out += shuffled([r for r in rows if key(r) == value], seed)[:per_class]
    return shuffled(out, seed)


# -- AG News topics -------------------------------------------------------------------------------
def agnews_train() -> list[dict]:
    return shuffled(read_tsv(BUNDLED / "agnews_train.tsv"))[:1800]


def agnews_heldout() -> list[dict]:
    return balanced(read_tsv(BUNDLED / "agnews_test.tsv"), lambda r: r["label"], 50)


def topic_sft(rows: list[dict]) -> list[dict]:
    return [{"instruction": TOPIC, "input": r["text"], "output": r["label"]} for r in rows]


def topic_pairs(rows: list[dict], seed: int = 0) -> list[dict]:
    """Chat pairs: the right topic over a wrong one drawn at random (every wrong topic equally
    often across the pairs)."""
    rng = random.Random(seed)
    out = []
    for r in rows:
        wrong = rng.choice([t for t in TOPICS if t != r["label"]])
        prompt = [{"role": "user", "content": f"{TOPIC}\n\n{r['text']}"}]
        out.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": r["label"]}],
                    "rejected": [{"role": "assistant", "content": wrong}]})
    return out


def topic_prompts(rows: list[dict]) -> list[dict]:
    """Text prompts (the SFT user turn) with the answer for a rule reward."""
    return [{"prompt": f"{TOPIC}\n\n{r['text']}", "answer": r["label"]} for r in rows]


# -- SST-2 label words ----------------------------------------------------------------------------
def _sentence(text: str) -> str:
    return " ".join(text.split())


def sst2_train(n: int) -> list[dict]:
    """`n` bundled training phrases of 6 words or more, half of each label (seed 0)."""
    rows = [r for r in read_tsv(BUNDLED / "sst2_train.tsv") if len(r["sentence"].split()) >= 6]
    return balanced(rows, lambda r: r["label"], n // 2)


def sst2_heldout(n: int = 200) -> list[dict]:
    return balanced(read_tsv(BUNDLED / "sst2_dev.tsv"), lambda r: r["label"], n // 2)


def sentiment_pairs(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        good = WORDS[int(r["label"])]
        prompt = [{"role": "user", "content": f"{SENTIMENT}\n\n{_sentence(r['sentence'])}"}]
        out.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": good}],
                    "rejected": [{"role": "assistant", "content": WORDS[1 - int(r['label'])]}]})
    return out


def sentiment_prompts(rows: list[dict]) -> list[dict]:
    return [{"prompt": f"{SENTIMENT}\n\n{_sentence(r['sentence'])}", "answer": WORDS[int(r["label"])]}
            for r in rows]


# -- real pairs -----------------------------------------------------------------------------------
_TURN = re.compile(r"\n\n(Human|Assistant): ")


def hh_messages(transcript: str) -> list[dict]:
    parts = _TURN.split("\n\n" + transcript.lstrip("\n"))  # ["", role, text, role, text, ...]
    msgs = []
    for role, text in zip(parts[1::2], parts[2::2]):
        msgs.append({"role": "user" if role == "Human" else "assistant", "content": text.strip()})
    return msgs


def hh_pairs(data: Path) -> tuple[list[dict], list[dict]]:
    """(train, held-out) chat pairs of HH-RLHF harmless: the shared turns are the prompt, the last
    assistant turns the responses; pairs with an empty or identical response are left out."""
    with gzip.open(data / "hh_rlhf_harmless" / "test.jsonl.gz", "rt") as f:
        raw = [json.loads(line) for line in f]
    pairs = []
    for r in raw:
        c, j = hh_messages(r["chosen"]), hh_messages(r["rejected"])
        if len(c) < 2 or c[:-1] != j[:-1] or c[-1]["role"] != "assistant" or j[-1]["role"] != "assistant":
            continue
        if not c[-1]["content"] or not j[-1]["content"] or c[-1] == j[-1]:
            continue
        pairs.append({"prompt": c[:-1], "chosen": c[-1:], "rejected": j[-1:]})
    order = shuffled(range(len(pairs)))
    cut = len(pairs) // 5
    return [pairs[i] for i in order[cut:]], [pairs[i] for i in order[:cut]]


def demo_pairs(data: Path) -> tuple[list[dict], list[dict]]:
    rows = json.loads((data / "llamafactory_dpo" / "dpo_en_demo.json").read_text())
    order = shuffled(range(len(rows)))
    cut = len(rows) // 5
    return [rows[i] for i in order[cut:]], [rows[i] for i in order[:cut]]


def write(path: Path, rows: list[dict]) -> Path:
    """One JSON object a line; llmtune reads a `.json` file as one document, so the name must
    say `.jsonl`."""
    if path.suffix != ".jsonl":
        raise ValueError(f"{path.name}: rows are written as JSON lines; name the file .jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
