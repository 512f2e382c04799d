"""The rows of docs/real-model.md's table (run by scripts/real_model_table.py): one function per
row, each returning the JSON of the llmtune commands it ran. Sizes and learning rates were set
before any held-out row was scored (literature values for each method; the SFT learning rate
of LoRA from a probe on the AG News selection slice), never tuned on the held-out rows."""

from __future__ import annotations

import real_model_data as D

MODEL = {"name": "smollm2-135m"}
LORA = {"r": 16, "alpha": 32, "target_modules": "all-linear"}
SEED = 0


# -- SFT: AG News topics as one label word ----------------------------------------------------------
SFT_METHODS = {  # name -> (method section, learning rate)
    "full": ({"name": "full"}, 3e-5),
    "lora": ({"name": "lora", **LORA}, 1e-3),
    "dora": ({"name": "lora", **LORA, "dora": True}, 1e-3),
    "ia3": ({"name": "ia3"}, 1e-2),
    "prefix": ({"name": "prefix", "num_virtual_tokens": 16, "init": "text",
                "init_text": "Name the topic of the news article in one word."}, 1e-2),
    "prefix-random": ({"name": "prefix", "num_virtual_tokens": 16}, 1e-2),
    "soft-prompt": ({"name": "soft-prompt", "num_virtual_tokens": 16, "init": "text",
                     "init_text": "Name the topic of the news article in one word."}, 3e-2),
    "adapter": ({"name": "adapter", "bottleneck_size": 64}, 1e-3),
}
SFT_ROWS, SFT_STEPS, SFT_BATCH = 256, 32, 8


def sft_recipe(t, method: dict, lr: float, rows: int = SFT_ROWS, steps: int = SFT_STEPS) -> dict:
    return {"model": MODEL,
            "data": {"task": "sft", "train": t.file(f"topic_train_{rows}.jsonl", D.topic_sft(D.agnews_train()[:rows])),
                     "eval": t.file("topic_heldout.jsonl", D.topic_sft(D.agnews_heldout())), "max_length": 256},
            "method": method,
            "train": {"max_steps": steps, "batch_size": SFT_BATCH, "lr": lr, "warmup_ratio": 0.1, "log_every": 4,
                      "seed": SEED},
            "eval": {"batch_size": 16, "generation": {"max_new_tokens": 8}}}


def sft_before(t) -> dict:
    return {"eval": t.llmtune("eval", t.recipe("sft/before", sft_recipe(t, *SFT_METHODS["lora"])))}


def sft_row(name: str, precision: str | None = None):
    def row(t) -> dict:
        recipe = sft_recipe(t, *SFT_METHODS[name])
        if precision:
            recipe["train"]["precision"] = precision
        return t.train_and_eval(f"sft/{name}" + (f"-{precision}" if precision else ""), recipe)
    return row


# -- preferences that can be learnt in minutes: SST-2 label words -----------------------------------
PREF_TRAIN, PREF_STEPS = 256, 32


def pref_recipe(t, method: dict, lr: float, steps: int = PREF_STEPS, base: dict = MODEL) -> dict:
    return {"model": base,
            "data": {"task": "preference", "train": t.file("sentiment_pairs_train.jsonl",
                                                           D.sentiment_pairs(D.sst2_train(1024)[:PREF_TRAIN])),
                     "eval": t.file("sentiment_pairs_heldout.jsonl", D.sentiment_pairs(D.sst2_heldout())),
                     "max_length": 160},
            "method": {**method, "peft": LORA},
            "train": {"max_steps": steps, "batch_size": 8, "lr": lr, "warmup_ratio": 0.1, "log_every": 4,
                      "seed": SEED},
            "eval": {"batch_size": 16, "generation": {"max_new_tokens": 8}}}


PREF_METHODS = {"dpo": ({"name": "dpo", "beta": 0.1}, 5e-4), "kto": ({"name": "kto", "beta": 0.1}, 5e-4),
                "orpo": ({"name": "orpo", "beta": 0.1}, 5e-4), "reward": ({"name": "reward"}, 5e-4)}


def pref_before(name: str):
    def row(t) -> dict:
        return {"eval": t.llmtune("eval", t.recipe(f"pref/{name}-before", pref_recipe(t, *PREF_METHODS[name])))}
    return row


def pref_row(name: str):
    def row(t) -> dict:
        return t.train_and_eval(f"pref/{name}", pref_recipe(t, *PREF_METHODS[name]), again=False)
    return row


# -- the same methods on real pairs ---------------------------------------------------------------
def real_recipe(t, which: str, method: dict, lr: float, steps: int) -> dict:
    train, held = D.hh_pairs(t.data) if which == "hh" else D.demo_pairs(t.data)
    data = {"task": "preference", "train": t.file(f"{which}_train.jsonl", train),
            "eval": t.file(f"{which}_heldout.jsonl", held[:200]), "max_length": 384, "truncation_side": "left",
            "empty_rows": "drop"}
    if which == "demo":
        data["columns"] = {"prompt": "conversations"}
    return {"model": MODEL, "data": data, "method": {**method, "peft": LORA},
            "train": {"max_steps": steps, "batch_size": 8, "lr": lr, "warmup_ratio": 0.1, "log_every": 4,
                      "seed": SEED},
            "eval": {"batch_size": 8, "generation": {"max_new_tokens": 48}}}


REAL_STEPS = {"dpo": 24, "kto": 24, "orpo": 32, "reward": 40}


def real_row(which: str, name: str):
    def row(t) -> dict:
        method, lr = PREF_METHODS[name]
        return t.train_and_eval(f"real/{which}/{name}", real_recipe(t, which, method, lr, REAL_STEPS[name]),
                                again=False)
    return row


def real_before(which: str, name: str):
    def row(t) -> dict:
        method, lr = PREF_METHODS[name]
        recipe = real_recipe(t, which, method, lr, REAL_STEPS[name])
        return {"eval": t.llmtune("eval", t.recipe(f"real/{which}/{name}-before", recipe))}
    return row


# -- online RL: a rule, then the trained reward model --------------------------------------------
def rl_recipe(t, algorithm: str, reward: dict, base: dict = MODEL, prompts=None, style: str = "chat",
              steps: int = 24) -> dict:
    train_rows, held_rows = prompts or (D.sentiment_prompts(D.sst2_train(1024)[PREF_TRAIN:PREF_TRAIN + 256]),
                                        D.sentiment_prompts(D.sst2_heldout(100)))
    return {"model": base,
            "data": {"task": "prompts", "train": t.file(f"prompts_train_{len(train_rows)}.jsonl", train_rows),
                     "eval": t.file(f"prompts_heldout_{len(held_rows)}.jsonl", held_rows), "max_length": 256,
                     "prompt_style": style},
            "method": {"name": "rl", "algorithm": algorithm, **reward, "num_generations": 4,
                       "max_completion_length": 16, "beta": 0.0, "peft": LORA},
            "train": {"max_steps": steps, "batch_size": 16, "lr": 5e-4, "log_every": 4, "seed": SEED},
            "eval": {"batch_size": 16}}


RULE = {"reward_function": "llmtune.methods.preference.rewards:answer_match",
        "reward_kwargs": {"labels": D.WORDS, "partial": 0.5}}


def rm_reward(t) -> dict:
    return {"reward_model": str(t.run_dir("pref/reward"))}


def rl_row(reward: str, algorithm: str):
    def row(t) -> dict:
        spec = RULE if reward == "rule" else rm_reward(t)
        return t.train_and_eval(f"rl/{reward}/{algorithm}", rl_recipe(t, algorithm, spec))
    return row


def rl_before(reward: str):
    def row(t) -> dict:
        spec = RULE if reward == "rule" else rm_reward(t)
        return {"eval": t.llmtune("eval", t.recipe(f"rl/{reward}-before", rl_recipe(t, "grpo", spec)))}
    return row


# -- stages chain: SFT -> DPO and SFT -> GRPO on AG News topics ----------------------------------
CHAIN_SFT_ROWS, CHAIN_SFT_STEPS = 64, 8


def chain_sft(t) -> dict:
    recipe = sft_recipe(t, SFT_METHODS["lora"][0], 1e-3, rows=CHAIN_SFT_ROWS, steps=CHAIN_SFT_STEPS)
    return t.train_and_eval("chain/sft", recipe)


def chain_parent(t) -> dict:
    return {"name": str(t.run_dir("chain/sft"))}


def chain_dpo_recipe(t) -> dict:
    train, held = D.agnews_train()[600:856], D.agnews_heldout()
    return {"model": chain_parent(t),
            "data": {"task": "preference", "train": t.file("topic_pairs_train.jsonl", D.topic_pairs(train)),
                     "eval": t.file("topic_pairs_heldout.jsonl", D.topic_pairs(held, seed=1)), "max_length": 256},
            "method": {"name": "dpo", "beta": 0.1, "peft": LORA},
            "train": {"max_steps": 32, "batch_size": 8, "lr": 5e-4, "warmup_ratio": 0.1, "log_every": 4,
                      "seed": SEED},
            "eval": {"batch_size": 16, "generation": {"max_new_tokens": 8}}}


def chain_dpo_before(t) -> dict:
    return {"eval": t.llmtune("eval", t.recipe("chain/dpo-before", chain_dpo_recipe(t)))}


def chain_dpo(t) -> dict:
    return t.train_and_eval("chain/dpo", chain_dpo_recipe(t), again=False)


def chain_grpo_recipe(t) -> dict:
    prompts = (D.topic_prompts(D.agnews_train()[900:1156]), D.topic_prompts(D.agnews_heldout()[:100]))
    reward = {"reward_function": "llmtune.methods.preference.rewards:answer_match",
              "reward_kwargs": {"labels": D.TOPICS}}
    return rl_recipe(t, "grpo", reward, base=chain_parent(t), prompts=prompts, style="auto")


def chain_grpo_before(t) -> dict:
    return {"eval": t.llmtune("eval", t.recipe("chain/grpo-before", chain_grpo_recipe(t)))}


def chain_grpo(t) -> dict:
    return t.train_and_eval("chain/grpo", chain_grpo_recipe(t))


# -- classification on the real LM: SST-2 -------------------------------------------------------
CLASSIFY = D.ROOT / "recipes" / "smollm2-sst2-classify.yaml"


def cls_label_words(t) -> dict:
    """Zero-shot label-word prompting of the same model, the 872 dev sentences."""
    recipe = D.ROOT / "recipes" / "smollm2-icl-sst2.yaml"
    return {"eval": t.llmtune("eval", recipe, "--set", "eval.shots=0")}


def cls_llmtune(t) -> dict:
    run = t.run_dir("cls/llmtune")
    return {"train": t.llmtune("train", CLASSIFY, "--output", run, "--overwrite"),
            "eval": t.llmtune("eval", run), "run": str(run)}


def cls_reference(t) -> dict:
    """The plain transformers + peft loop at the recipe's setting (its rows, steps, rates)."""
    import yaml

    r = yaml.safe_load(CLASSIFY.read_text())
    out = t.script(D.ROOT / "scripts" / "smollm2_classify_reference.py", "--eval", "dev", "--init", "label-words",
                   "--template", r["data"]["text_template"].replace("{text}", "{}"),
                   "--rows", r["data"]["train"]["limit"], "--batch", r["train"]["batch_size"],
                   "--lr", r["train"]["lr"], "--rank", r["method"]["r"], "--max-length", r["data"]["max_length"])
    return {"eval": {"accuracy": out["accuracy"], "accuracy_se": out["accuracy_se"], "examples": out["eval_rows"]},
            "reference": out, "train": {"train_seconds": out["train_seconds"]}}


def cls_minilm(t) -> dict:
    """MiniLM with the quickstart's method on the same training phrases as the SmolLM2 recipe."""
    import yaml

    rows = yaml.safe_load(CLASSIFY.read_text())["data"]["train"]["limit"]
    run = t.run_dir("cls/minilm")
    quickstart = D.ROOT / "recipes" / "quickstart.yaml"
    trained = t.llmtune("train", quickstart, "--output", run, "--overwrite", "--set", f"data.train.limit={rows}",
                        "--set", "train.batch_size=16", "--set", "train.lr=1.0e-3", "--set", "train.save_every=null")
    return {"train": trained, "eval": t.llmtune("eval", run), "run": str(run)}


ROWS = {"sft/before": sft_before, **{f"sft/{m}": sft_row(m) for m in SFT_METHODS},
        "sft/lora-bf16": sft_row("lora", "bf16"),
        **{f"pref/{m}-before": pref_before(m) for m in ("dpo", "orpo", "reward")},
        **{f"pref/{m}": pref_row(m) for m in ("dpo", "kto", "orpo", "reward")},
        **{f"rl/{r}-before": rl_before(r) for r in ("rule", "rm")},
        **{f"rl/{r}/{a}": rl_row(r, a) for r in ("rule", "rm") for a in ("grpo", "rloo")},
        "chain/sft": chain_sft, "chain/dpo-before": chain_dpo_before, "chain/dpo": chain_dpo,
        "chain/grpo-before": chain_grpo_before, "chain/grpo": chain_grpo,
        **{f"real/{w}/{m}-before": real_before(w, m) for w in ("hh", "demo") for m in ("orpo", "reward")},
        **{f"real/{w}/{m}": real_row(w, m) for w in ("hh", "demo") for m in ("dpo", "kto", "orpo", "reward")},
        "cls/label-words": cls_label_words, "cls/llmtune": cls_llmtune, "cls/reference": cls_reference,
        "cls/minilm": cls_minilm}
