"""Prefix tuning: the prefix is really attended to (encoders and decoders, with and without
the KV cache), padding stays masked, it trains, and only the prefix (+ head) is saved."""

from __future__ import annotations

import json

import pytest
import torch

from llmtune.methods.prompts.prefix import Prefix, PrefixConfig
from llmtune.train.assemble import prepare_for_training, save_trained, load_into


pytestmark = pytest.mark.usefixtures("one_thread")


def _method(**opts) -> Prefix:
    return Prefix(PrefixConfig(name="prefix", **opts))


def _task_model(name: str, task: str, seed: int = 0):
    from llmtune.models.load import load_body
    from llmtune.models.task_model import TaskModel

    torch.manual_seed(seed)
    body = load_body(name, task)
    if task == "classification":
        return TaskModel(body, task, num_labels=2, head_dropout=0.0)
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


@pytest.mark.parametrize("name,task,layers,kv_heads,head_dim,head", [
    ("tiny-llama", "sft", 2, 2, 16, 0),             # grouped-query: 2 key/value heads for 4 query heads
    ("tiny-gpt2", "sft", 2, 4, 16, 0),
    ("tiny-bert", "classification", 2, 4, 16, 64 * 2 + 2),
])
def test_trainable_parameters_are_what_the_config_implies(name, task, layers, kv_heads, head_dim, head):
    n = 5
    model = _task_model(name, task)
    prepare_for_training(model, _method(num_virtual_tokens=n))
    assert model.trainable_parameters()[0] == layers * 2 * kv_heads * n * head_dim + head

    model = _task_model(name, task)
    prepare_for_training(model, _method(num_virtual_tokens=n, reparameterize=True, hidden=32))
    out = layers * 2 * kv_heads * head_dim
    mlp = n * 64 + (64 * 32 + 32) + (32 * out + out)
    assert model.trainable_parameters()[0] == mlp + head


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_prefix_equals_a_prefilled_kv_cache(name):
    """The classic definition of prefix tuning: the prefix is a KV cache the real tokens attend to."""
    from transformers import DynamicCache

    model = _task_model(name, "sft")
    n = 3
    prepare_for_training(model, _method(num_virtual_tokens=n))
    _, ids, mask = _batch(name)
    ours = _logits(model, ids, mask)

    body = model.body
    kv = body.llmtune_prefix().detach()
    body.set_attn_implementation("sdpa")  # the stock path, no prefix function
    b, length = ids.shape
    cache = DynamicCache(config=body.config)
    for layer in range(kv.shape[0]):
        cache.update(kv[layer, 0].expand(b, -1, -1, -1).contiguous(),
                     kv[layer, 1].expand(b, -1, -1, -1).contiguous(), layer)
    with torch.no_grad():
        ref = body(input_ids=ids, attention_mask=torch.cat([torch.ones(b, n, dtype=mask.dtype), mask], 1),
                   cache=cache, position_ids=torch.arange(length).expand(b, -1)).logits
    real = mask.bool()
    torch.testing.assert_close(ours[real], ref[real], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name,task", [("tiny-bert", "classification"), ("tiny-llama", "sft"),
                                        ("tiny-gpt2", "sft")])
def test_prefix_changes_outputs_and_padding_stays_masked(name, task):
    model = _task_model(name, task)
    _, ids, mask = _batch(name)
    before = _logits(model, ids, mask)
    prepare_for_training(model, _method(num_virtual_tokens=4))
    with_prefix = _logits(model, ids, mask)
    assert (with_prefix - before).abs().max() > 1e-3, "the prefix did not change the outputs"

    with torch.no_grad():
        model.body.llmtune_prefix.prefix.mul_(2.0)
    assert (_logits(model, ids, mask) - with_prefix).abs().max() > 1e-3, "outputs ignore the prefix values"

    # The short row alone and padded in a batch must agree: padding is still masked out.
    _, solo_ids, solo_mask = _batch(name, texts=("dull",))
    solo = _logits(model, solo_ids, solo_mask)[0]
    padded = _logits(model, ids, mask)[1]
    if task != "classification":
        padded = padded[: solo.shape[0]]
    torch.testing.assert_close(solo, padded, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_generate_honours_the_prefix_with_and_without_cache(name):
    tok, ids, _ = _batch(name, texts=("### Instruction:\nsay hi\n\n### Response:\n",))
    model = _task_model(name, "sft")
    kw = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": tok.pad_token_id}
    untrained = model.body.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    prepare_for_training(model, _method(num_virtual_tokens=4))
    with torch.no_grad():
        model.body.llmtune_prefix.prefix.normal_(0, 3.0)
    model.eval()
    cached = model.body.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    uncached = model.body.generate(ids, attention_mask=torch.ones_like(ids), use_cache=False, **kw)
    assert torch.equal(cached, uncached), "the KV cache path disagrees with full recomputation"
    greedy = ids
    for _ in range(6):  # greedy decoding by hand through the training forward
        logits = _logits(model, greedy, torch.ones_like(greedy))
        greedy = torch.cat([greedy, logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(cached, greedy)
    assert not torch.equal(cached, untrained), "generation ignores the prefix"


def _sft_examples(tok):
    pairs = [("Name a color.", "Blue."), ("Capital of France?", "Paris."), ("Two plus two?", "Four.")]
    out = []
    for q, a in pairs:
        prompt = tok(f"### Instruction:\n{q}\n\n### Response:\n")["input_ids"]
        response = tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        out.append((prompt, response))
    return out


def memorise(model, method, tok, steps: int, lr: float) -> tuple[int, list, bool]:
    """Train `method` on three SFT pairs. Return how many responses greedy decoding
    reproduces, the losses, and whether any generation differs from the untrained model's."""
    from llmtune.data.batching import collate

    examples = _sft_examples(tok)
    batch = collate([{"input_ids": p + r, "labels": [-100] * len(p) + r} for p, r in examples], tok.pad_token_id)

    def generations():
        model.eval()
        out = []
        for prompt, response in examples:
            ids = torch.tensor([prompt])
            gen = model.body.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(response),
                                      do_sample=False, pad_token_id=tok.pad_token_id)
            out.append(gen[0, len(prompt):].tolist())
        return out

    untrained = generations()
    prepare_for_training(model, method)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        loss, _ = model(batch["input_ids"], batch["attention_mask"], batch["labels"])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    trained = generations()
    hits = sum(gen == response for gen, (_, response) in zip(trained, examples))
    return hits, losses, trained != untrained


def test_memorises_a_few_sft_examples_with_tiny_llama():
    from llmtune.models.load import load_tokenizer

    tok = load_tokenizer("tiny-llama")
    model = _task_model("tiny-llama", "sft")
    hits, losses, changed = memorise(model, _method(num_virtual_tokens=10), tok, steps=150, lr=0.1)
    assert losses[-1] < losses[0] - 1.0
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
    prepare_for_training(model, _method(num_virtual_tokens=10, reparameterize=True, hidden=128))
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
    ("tiny-bert", "classification", {}),
    ("tiny-llama", "sft", {"reparameterize": True, "hidden": 16}),  # the MLP is folded at save time
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
    assert files == {"prefix.safetensors", "prefix_config.json"} | (
        {"head.safetensors"} if task == "classification" else set())
    saved = load_file(str(tmp_path / "prefix.safetensors"))
    assert list(saved) == ["prefix"] and saved["prefix"].shape[3] == 4
    assert json.loads((tmp_path / "prefix_config.json").read_text())["num_virtual_tokens"] == 4

    fresh = _task_model(name, task, seed=123)  # another random head: load must replace it
    load_into(fresh, method, tmp_path)
    torch.testing.assert_close(_logits(fresh, ids, mask), expected, rtol=0, atol=1e-5)


def test_loading_onto_another_architecture_is_a_user_error(tmp_path):
    from llmtune.errors import UserError

    method = _method(num_virtual_tokens=4)
    model = _task_model("tiny-llama", "sft")
    prepare_for_training(model, method)
    save_trained(model, method, tmp_path)
    with pytest.raises(UserError, match="trained for a model"):
        load_into(_task_model("tiny-gpt2", "sft"), method, tmp_path)


def test_train_end_to_end_writes_only_the_prefix(cli, write_recipe, tmp_path):
    from conftest import DATA

    recipe = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "sft", "train": {"path": str(DATA / "alpaca_tiny.json"), "limit": 24},
                 "eval_fraction": 0.25, "max_length": 64},
        "method": {"name": "prefix", "num_virtual_tokens": 8, "reparameterize": True, "hidden": 32},
        "train": {"max_steps": 3, "batch_size": 4, "lr": 1e-2, "log_every": 1},
    })
    run = tmp_path / "run"
    res = cli("train", recipe, "--output", run)
    assert res.code == 0, res.err
    final = run / "final"
    weights = {p.name for p in final.glob("*.safetensors")}
    assert weights == {"prefix.safetensors"}, weights
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["trainable_parameters"] == 8 * 64 + (64 * 32 + 32) + (32 * 128 + 128)

    res = cli("eval", run)
    assert res.code == 0, res.err
    assert json.loads((run / "eval.json").read_text())["method"] == "prefix"


def test_extend_mask_handles_every_mask_form():
    from llmtune.methods.prompts._prefix_attention import extend_mask

    # No mask, causal, with two earlier tokens in a KV cache: queries are positions 2 and 3.
    m = extend_mask(None, n_prefix=2, q_len=2, kv_len=4, is_causal=True)
    assert m.tolist() == [[[[True, True, True, True, True, False], [True, True, True, True, True, True]]]]
    assert extend_mask(None, 2, q_len=3, kv_len=3, is_causal=False) is None  # encoder, no padding
    assert extend_mask(None, 2, q_len=1, kv_len=5, is_causal=True) is None   # one decoding step sees all

    keep = torch.tensor([[[[True, False]]]])
    assert extend_mask(keep, 3, 1, 2, True).tolist() == [[[[True, True, True, True, False]]]]
    additive = torch.tensor([[[[0.0, -1e9]]]])
    assert extend_mask(additive, 1, 1, 2, False).tolist() == [[[[0.0, 0.0, -1e9]]]]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_text_init_starts_from_the_models_own_keys_and_values(name):
    """init: text: the prefix is the key/value cache the model fills for the text, so real tokens
    attend to it as to those words written in front of them (at the same positions)."""
    from transformers import DynamicCache

    from llmtune.models.load import load_tokenizer

    model = _task_model(name, "sft")
    text = "topic of the news"
    ids = load_tokenizer(name)(text, add_special_tokens=False)["input_ids"]
    n = len(ids) + 2  # longer than the text: the text repeats
    with torch.no_grad():  # in eval mode, as the init reads them (no dropout)
        cache = model.body.eval()(input_ids=torch.tensor([(ids * 2)[:n]]), use_cache=True).past_key_values
    model.body.train()
    prepare_for_training(model, _method(num_virtual_tokens=n, init="text", init_text=text))
    kv = model.body.llmtune_prefix().detach()
    assert kv.shape[3] == n
    torch.testing.assert_close(kv[0, 0], cache.layers[0].keys[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(kv[-1, 1], cache.layers[-1].values[0], rtol=0, atol=1e-6)
    assert model.body.llmtune_prefix.prefix.requires_grad


def test_text_init_is_refused_on_an_encoder_and_with_reparameterize():
    from pydantic import ValidationError

    from llmtune.errors import UserError

    with pytest.raises(ValidationError, match="reparameterize"):
        PrefixConfig(name="prefix", init="text", init_text="x", reparameterize=True)
    with pytest.raises(UserError, match="init: random"):
        prepare_for_training(_task_model("tiny-bert", "classification"),
                             _method(num_virtual_tokens=2, init="text", init_text="good film"))
