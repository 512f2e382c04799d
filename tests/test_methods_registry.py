"""Every registered method x {MiniLM classification, tiny Llama SFT, tiny GPT-2 SFT}.

The methods come from the registry, not from a list kept here: a newly registered method
is tested automatically (methods whose `tasks` exclude a scenario's task, such as
preference/RL methods, are skipped for that scenario, and so are methods that train nothing). For each pair: the loss on a fixed
small batch falls clearly under AdamW, the trainable-parameter count is sane, and saving
then loading onto a fresh base model gives identical outputs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from llmtune.methods.registry import all_methods
from tiny_lm import trained_scale
from llmtune.train.assemble import prepare_for_training, save_trained, load_into

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"

SUPERVISED = {"full", "frozen-head", "lora", "prefix", "soft-prompt", "adapter", "ia3"}

# Scenario -> (model, task, data file, columns, max_length).
SCENARIOS = {
    "minilm-cls": ("minilm", "classification", "data/sst2_train.tsv", {"text": "sentence", "label": "label"}, 32),
    "llama-sft": ("tiny-llama", "sft", "data/alpaca_tiny.json", {}, 48),
    "gpt2-sft": ("tiny-gpt2", "sft", "data/alpaca_tiny.json", {}, 48),
}

# Options that are separate code paths worth their own case (id -> method options).
VARIANTS = {
    "lora": {"": {}, "dora": {"dora": True}, "rslora": {"rslora": True, "r": 16}},
    "adapter": {"": {}, "pfeiffer": {"placement": "pfeiffer", "bottleneck_size": 8}},
}

# The loss must end below this fraction of where it started (a quarter of it gone).
LOSS_KEPT = 0.75
# Learning rates (MiniLM classification, tiny random LM) for a short memorisation run on
# one batch. Parameter-efficient methods train few parameters with small gradients and
# need larger steps than full finetuning; tiny random LMs start far from any optimum.
TEST_LR = {"full": (1e-4, 1e-3), "frozen-head": (1e-2, 1e-1), "lora": (5e-3, 1e-2),
           "adapter": (5e-3, 5e-2), "ia3": (5e-2, 2e-1), "prefix": (1e-2, 1e-1),
           "soft-prompt": (3e-2, 1e-1)}
DEFAULT_TEST_LR = (1e-2, 5e-2)
# MiniLM fits 8 sentences within a few steps; the random tiny LMs need more.
STEPS = {"classification": 10, "sft": 30}


pytestmark = pytest.mark.usefixtures("one_thread")


def _cases():
    cases = []
    for scenario, (_, task, *_rest) in SCENARIOS.items():
        for name, method in sorted(all_methods().items()):
            if task not in method.tasks or not method.trains:
                continue
            for variant, opts in VARIANTS.get(name, {"": {}}).items():
                case_id = f"{name}{'-' + variant if variant else ''}-{scenario}"
                marks = [pytest.mark.slow] if scenario == "minilm-cls" else []
                cases.append(pytest.param(scenario, name, opts, id=case_id, marks=marks))
    return cases


def _recipe(scenario: str, method: dict):
    from llmtune.recipe.load import recipe_from_dict

    model, task, path, columns, max_length = SCENARIOS[scenario]
    raw = {"model": {"name": model, "head_dropout": 0.0},
           # prompt_style plain: the learning-rate table below was tuned on the ### Instruction prompt.
           "data": {"task": task, "train": {"path": path, "limit": 8}, "max_length": max_length,
                    "columns": columns, "eval_fraction": 0.0, **({"prompt_style": "plain"} if task == "sft" else {})},
           "method": method}
    return recipe_from_dict(raw, base_dir=RECIPES).recipe


class Scenario:
    """A fixed batch and a pristine base body per scenario, built once per module."""

    def __init__(self, scenario: str):
        from llmtune.data import encode
        from llmtune.data.batching import collate
        from llmtune.data.readers import read_rows
        from llmtune.models.load import load_body, load_tokenizer

        self.scenario = scenario
        self.model_name, self.task = SCENARIOS[scenario][:2]
        recipe = _recipe(scenario, {"name": "full"})
        self.tok = load_tokenizer(self.model_name)
        rows = read_rows(RECIPES / recipe.data.train.path, limit=8)
        stats = encode.EncodeStats()
        if self.task == "classification":
            self.labels = encode.label_names(rows, "label", None)
            examples = encode.encode_classification(rows, self.tok, recipe.data, self.labels, stats)
        else:
            self.labels = None
            examples = encode.encode_sft(rows, self.tok, recipe.data, stats)
        self.batch = collate(examples, self.tok.pad_token_id)
        self._base = load_body(self.model_name, self.task)
        if self.task != "classification":
            trained_scale(self._base)  # see tiny_lm.trained_scale

    def fresh_body(self):
        return copy.deepcopy(self._base)

    def task_model(self, body=None):
        from llmtune.models.task_model import TaskModel

        body = body if body is not None else self.fresh_body()
        if self.task == "classification":
            return TaskModel(body, self.task, num_labels=len(self.labels), pooling="mean", head_dropout=0.0)
        return TaskModel(body, self.task)

    def forward(self, model):
        b = self.batch
        return model(b["input_ids"], b["attention_mask"], b["labels"])


@pytest.fixture(scope="module")
def scenarios():
    built: dict[str, Scenario] = {}

    def get(name: str) -> Scenario:
        if name not in built:
            built[name] = Scenario(name)
        return built[name]

    return get


def _saved_elements(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in folder.glob("*.safetensors"):
        with safe_open(str(f), "pt") as fh:
            for key in fh.keys():
                total += _numel(fh.get_slice(key).get_shape())
    return total


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def test_registry_covers_the_supervised_methods():
    covered = {name for name, m in all_methods().items() if {"classification", "sft"} <= set(m.tasks)}
    assert SUPERVISED <= covered, f"missing supervised methods: {sorted(SUPERVISED - covered)}"


@pytest.mark.parametrize("scenario,name,opts", _cases())
def test_method_trains_saves_and_reloads(scenario, name, opts, scenarios, tmp_path):
    from llmtune.methods.registry import get_method
    from llmtune.models.load import load_body
    from llmtune.train.optim import build_optimizer

    sc = scenarios(scenario)
    recipe = _recipe(scenario, {"name": name, **opts})
    method = get_method(name)(recipe.method)
    torch.manual_seed(0)
    model = sc.task_model()
    prepare_for_training(model, method)

    trainable, total = model.trainable_parameters()
    assert trainable > 0
    assert trainable <= total
    if name != "full":
        assert trainable < total, f"{name} trains every parameter"

    lr = TEST_LR.get(name, DEFAULT_TEST_LR)[0 if sc.task == "classification" else 1]
    steps = STEPS[sc.task]
    optimizer = build_optimizer(model, lr, 0.0)
    # Dropout off: this checks that the trained parameters can fit one batch, and on the
    # tiny models dropout (0.1 everywhere, prompt vectors included) is mostly noise.
    model.eval()
    losses = []
    for _ in range(steps):
        loss, _ = sc.forward(model)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    start, end = losses[0], sum(losses[-3:]) / 3
    assert end < LOSS_KEPT * start, f"{name}: loss {start:.3f} -> {end:.3f} over {steps} steps (lr {lr})"

    model.eval()
    with torch.no_grad():
        expected = sc.forward(model)[1]
    out = tmp_path / "final"
    out.mkdir()
    save_trained(model, method, out)
    source = method.body_source(sc.model_name, out)
    if source == sc.model_name:
        # Only what trained is saved when the body comes from the base model.
        assert _saved_elements(out) <= trainable, f"{name} saved more than it trained"
        body = sc.fresh_body()
    else:
        body = load_body(sc.model_name, sc.task, source=source)
    torch.manual_seed(123)  # a different random head: load must replace it
    reloaded = sc.task_model(body)
    load_into(reloaded, method, out)
    reloaded.eval()
    with torch.no_grad():
        got = sc.forward(reloaded)[1]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)



def test_result_kind_says_which_runs_hold_a_causal_lm():
    """chat, generate, serve and GGUF export ask the method what a run holds, not its name."""
    from llmtune.methods.registry import get_method

    def kind(name: str, task: str) -> str:
        cls = get_method(name)
        return cls(cls.Config(name=name)).result_kind(task)

    assert kind("lora", "sft") == "causal_lm"
    assert kind("lora", "classification") == "classifier"
    assert kind("prefix", "causal_lm") == "causal_lm"
    assert kind("dpo", "preference") == "causal_lm"
    assert kind("reward", "preference") == "reward"
