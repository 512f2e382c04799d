"""Soft prompts (prompt tuning, p-tuning): the prompt reaches the model, pooling and the loss see
only real tokens, generation honours the prompt, and only the prompt (+ head) is saved."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from llmtune.methods.prompts.soft_prompt import SoftPrompt, SoftPromptConfig
from llmtune.train.assemble import prepare_for_training, save_trained, load_into


pytestmark = pytest.mark.usefixtures("one_thread")


def _method(**opts) -> SoftPrompt:
    return SoftPrompt(SoftPromptConfig(name="soft-prompt", **opts))


def _task_model(name: str, task: str, seed: int = 0, pooling: str = "mean", body=None):
    from llmtune.models.load import load_body
    from llmtune.models.task_model import TaskModel

    torch.manual_seed(seed)
    body = body if body is not None else load_body(name, task)
    if task == "classification":
        return TaskModel(body, task, num_labels=2, pooling=pooling, head_dropout=0.0)
    return TaskModel(body, task)


def _batch(name: str, texts=("the film was a delight , truly", "dull")):
    from llmtune.models.load import load_tokenizer

    tok = load_tokenizer(name)
    enc = tok(list(texts), padding=True, return_tensors="pt")
    return tok, enc["input_ids"], enc["attention_mask"]


def _logits(model, ids, mask):
    model.eval()
    with torch.no_grad():
        return model(ids, mask)[1]


def _lstm_params(inp: int, h: int) -> int:
    per_direction = lambda x: 4 * h * (x + h) + 8 * h  # noqa: E731  (input and hidden weights, two biases)
    return 2 * per_direction(inp) + 2 * per_direction(2 * h)


@pytest.mark.parametrize("name,task,head", [("tiny-llama", "sft", 0), ("tiny-bert", "classification", 64 * 2 + 2)])
def test_trainable_parameters_are_what_the_config_implies(name, task, head):
    n, h, dim = 6, 16, 64
    expected = {
        "none": n * dim,
        "mlp": n * dim + (dim * h + h) + (h * dim + dim),
        "lstm": n * dim + _lstm_params(dim, h) + (2 * h * h + h) + (h * dim + dim),
    }
    for encoder, count in expected.items():
        model = _task_model(name, task)
        prepare_for_training(model, _method(num_virtual_tokens=n, encoder=encoder, encoder_hidden=h))
        assert model.trainable_parameters()[0] == count + head, encoder


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_classification_pools_over_the_real_tokens_only(pooling):
    from llmtune.models.task_model import pool

    model = _task_model("tiny-bert", "classification", pooling=pooling)
    _, ids, mask = _batch("tiny-bert")
    before = _logits(model, ids, mask)
    n = 5
    prepare_for_training(model, _method(num_virtual_tokens=n))
    got = _logits(model, ids, mask)
    assert (got - before).abs().max() > 1e-4, "the prompt did not change the outputs"

    # Reference: the prompt in front by hand, its positions dropped before pooling.
    base, prompt = model.body.base, model.body.prompt().detach()
    embeds = torch.cat([prompt.expand(ids.shape[0], -1, -1), base.get_input_embeddings()(ids)], dim=1)
    full_mask = torch.cat([torch.ones(ids.shape[0], n, dtype=mask.dtype), mask], dim=1)
    with torch.no_grad():
        hidden = base(inputs_embeds=embeds, attention_mask=full_mask).last_hidden_state[:, n:]
        ref = model.head(pool(hidden, mask, pooling))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)

    # Padding is masked: the short row alone gives what it gives inside the padded batch.
    _, solo_ids, solo_mask = _batch("tiny-bert", texts=("dull",))
    torch.testing.assert_close(_logits(model, solo_ids, solo_mask)[0], got[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_causal_loss_and_logits_cover_exactly_the_real_tokens(name):
    model = _task_model(name, "sft")
    _, ids, mask = _batch(name)
    before = _logits(model, ids, mask)
    prepare_for_training(model, _method(num_virtual_tokens=4))
    labels = ids.masked_fill(mask == 0, -100)
    model.eval()
    with torch.no_grad():
        loss, logits = model(ids, mask, labels)
    assert logits.shape == before.shape
    assert (logits - before).abs().max() > 1e-3, "the prompt did not change the outputs"
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)

    _, solo_ids, solo_mask = _batch(name, texts=("dull",))
    solo = _logits(model, solo_ids, solo_mask)[0]
    torch.testing.assert_close(solo, logits[1, : solo.shape[0]], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_generate_honours_the_prompt(name):
    tok, ids, _ = _batch(name, texts=("### Instruction:\nsay hi\n\n### Response:\n",))
    model = _task_model(name, "sft")
    kw = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": tok.pad_token_id}
    prepare_for_training(model, _method(num_virtual_tokens=4))
    with torch.no_grad():
        model.body.prompt.embedding.normal_(0, 1.0)
    model.eval()
    out = model.body.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    assert torch.equal(out[:, : ids.shape[1]], ids), "generate() returns the input ids first, like transformers"
    greedy = ids
    for _ in range(6):  # greedy decoding by hand through the training forward
        logits = _logits(model, greedy, torch.ones_like(greedy))
        greedy = torch.cat([greedy, logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, greedy)
    # (trained vs untrained generations: see the memorisation test; this random tiny Llama
    # continues the same way whatever a random prompt says.)
    with_prompt = _logits(model, greedy, torch.ones_like(greedy))
    model.body = model.body.base
    assert (with_prompt - _logits(model, greedy, torch.ones_like(greedy))).abs().max() > 1e-3


def test_init_from_text_and_from_vocabulary():
    from llmtune.models.load import load_tokenizer

    tok = load_tokenizer("tiny-llama")
    text = "Classify the sentiment"
    token_ids = tok(text, add_special_tokens=False)["input_ids"]
    n = len(token_ids) + 2
    model = _task_model("tiny-llama", "sft")
    table = model.body.get_input_embeddings().weight.detach().clone()
    prepare_for_training(model, _method(num_virtual_tokens=n, init="text", init_text=text))
    cyclic = [token_ids[i % len(token_ids)] for i in range(n)]
    torch.testing.assert_close(model.body.prompt(), table[cyclic])

    model = _task_model("tiny-llama", "sft")
    prepare_for_training(model, _method(num_virtual_tokens=n, init="vocab"))
    prompt = model.body.prompt().detach()
    assert all((table == row).all(dim=1).any() for row in prompt), "vocab init rows must be real token embeddings"


@pytest.mark.parametrize("opts,message", [
    ({"init": "text"}, "needs init_text"),
    ({"init_text": "hello"}, "only with init: text"),
    ({"encoder": "mlp", "init": "vocab"}, "use init: random"),
])
def test_inconsistent_options_are_recipe_errors(opts, message):
    from llmtune.errors import UserError
    from llmtune.recipe.load import recipe_from_dict

    from conftest import RECIPES

    raw = {"model": {"name": "tiny-llama"}, "data": {"task": "sft", "train": "data/alpaca_tiny.json"},
           "method": {"name": "soft-prompt", **opts}}
    with pytest.raises(UserError) as err:
        recipe_from_dict(raw, base_dir=RECIPES)
    assert len(err.value.problems) == 1 and message in err.value.problems[0]
    assert err.value.problems[0].startswith("<recipe> method:")


def test_memorises_a_few_sft_examples_with_tiny_llama():
    """A soft prompt steers a frozen model only through attention. The built-in tiny Llama's
    random weights (std 0.02) give near-uniform attention that barely lets it (loss 6.94 ->
    6.69 in 200 steps); the same architecture at init std 0.3 is steerable."""
    from transformers import AutoModelForCausalLM

    from llmtune.models.builtin import tiny_config
    from llmtune.models.load import load_tokenizer
    from test_method_prefix import memorise

    tok = load_tokenizer("tiny-llama")
    config = tiny_config("tiny-llama", len(tok))
    config.initializer_range = 0.3
    torch.manual_seed(0)
    model = _task_model("tiny-llama", "sft", body=AutoModelForCausalLM.from_config(config))
    hits, losses, changed = memorise(model, _method(num_virtual_tokens=20), tok, steps=80, lr=0.3)
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    assert changed, "trained and untrained generations are the same"
    assert hits == 3, f"greedy decoding reproduced {hits}/3 trained responses"


@pytest.mark.slow
def test_minilm_classification_trains():
    from llmtune.models.load import load_tokenizer

    tok = load_tokenizer("minilm")
    texts = ["a gorgeous , witty film", "tedious and overlong", "a triumph", "i hated every minute",
             "warm and funny", "a mess from start to finish", "beautifully acted", "boring"]
    enc = tok(texts, padding=True, return_tensors="pt")
    labels = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0])
    model = _task_model("minilm", "classification")
    prepare_for_training(model, _method(num_virtual_tokens=10, encoder="mlp", encoder_hidden=64))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(12):
        loss, _ = model(enc["input_ids"], enc["attention_mask"], labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name,task,opts", [
    ("tiny-bert", "classification", {"encoder": "lstm", "encoder_hidden": 8}),  # the encoder is folded away
    ("tiny-gpt2", "sft", {}),
])
def test_save_then_load_onto_a_fresh_base_gives_identical_outputs(tmp_path, name, task, opts):
    from safetensors.torch import load_file

    method = _method(num_virtual_tokens=4, **opts)
    model = _task_model(name, task)
    prepare_for_training(model, method)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)  # as if trained
    _, ids, mask = _batch(name)
    expected = _logits(model, ids, mask)
    save_trained(model, method, tmp_path)

    files = {p.name for p in tmp_path.iterdir()}
    assert files == {"soft_prompt.safetensors", "soft_prompt_config.json"} | (
        {"head.safetensors"} if task == "classification" else set())
    saved = load_file(str(tmp_path / "soft_prompt.safetensors"))
    assert list(saved) == ["prompt"] and tuple(saved["prompt"].shape) == (4, 64)

    fresh = _task_model(name, task, seed=123)  # another random head: load must replace it
    load_into(fresh, method, tmp_path)
    torch.testing.assert_close(_logits(fresh, ids, mask), expected, rtol=0, atol=1e-5)


def test_train_end_to_end_writes_only_the_prompt_and_head(cli, write_recipe, tmp_path):
    from conftest import tiny_sst2

    recipe = write_recipe({
        "model": {"name": "tiny-bert"},
        "data": {"task": "classification", "train": str(tiny_sst2(tmp_path, 32)), "eval_fraction": 0.25,
                 "columns": {"text": "sentence", "label": "label"}, "max_length": 32},
        "method": {"name": "soft-prompt", "num_virtual_tokens": 8},
        "train": {"max_steps": 3, "batch_size": 8, "lr": 0.3, "log_every": 1},
    })
    run = tmp_path / "run"
    res = cli("train", recipe, "--output", run)
    assert res.code == 0, res.err
    final = run / "final"
    assert {p.name for p in final.glob("*.safetensors")} == {"soft_prompt.safetensors", "head.safetensors"}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["trainable_parameters"] == 8 * 64 + 64 * 2 + 2

    res = cli("eval", run)
    assert res.code == 0, res.err
    assert json.loads((run / "eval.json").read_text())["method"] == "soft-prompt"


def test_too_long_for_the_position_table_is_a_user_error():
    from llmtune.errors import UserError

    model = _task_model("tiny-gpt2", "sft")
    prepare_for_training(model, _method(num_virtual_tokens=20))
    ids = torch.ones(1, model.body.config.max_position_embeddings - 10, dtype=torch.long)
    with pytest.raises(UserError, match="lower data.max_length"):
        model(ids, torch.ones_like(ids))
