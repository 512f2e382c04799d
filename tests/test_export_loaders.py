"""What an export loads with, as docs/methods.md's table says (issue 9).

- A merged classification run on a decoder with `pooling: last` is a stock
  `*ForSequenceClassification` folder: AutoModelForSequenceClassification alone (no llmtune,
  no peft) loads it and gives the run's logits, for every method that can merge.
- A head no stock class reproduces (BERT with mean pooling) stays body + head.safetensors,
  and the export says why.
- A causal soft prompt also exports in peft's prompt-tuning format, which PeftModel reads
  back to the same logits.
- A LoRA adapter names its base by its public name, never a site-packages path.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import DATA, tiny_sst2

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["a gripping , funny film", "the plot goes nowhere at all and nobody cares about it", "fine"]
MERGEABLE = {
    "lora": {"name": "lora", "r": 4, "target_modules": ["q_proj", "v_proj"]},
    "ia3": {"name": "ia3"},
    "full": {"name": "full"},
    "frozen-head": {"name": "frozen-head"},
    "linear-probe": {"name": "linear-probe"},
}


def _train(cli, write_recipe, tmp_path, model: str, method: dict, task: str = "classification",
           pooling: str = "last", name: str = "run"):
    if task == "classification":
        data = {"task": task, "train": str(tiny_sst2(tmp_path, 24)), "columns": {"text": "sentence"},
                "max_length": 24}
    else:
        data = {"task": task, "train": {"path": str(DATA / "alpaca_tiny.json"), "limit": 16}, "max_length": 48}
    recipe = {"model": {"name": model, "pooling": pooling}, "data": {**data, "eval_fraction": 0},
              "method": method, "train": {"max_steps": 3, "batch_size": 8, "lr": 5e-2 if method["name"] != "full"
                                          else 5e-3}, "output": {"dir": str(tmp_path / name)}}
    res = cli("train", write_recipe(recipe, f"{name}.yaml"))
    assert res.code == 0, res.err
    return tmp_path / name


def _llmtune_logits(run, texts=TEXTS):
    from llmtune.runs.open import open_run

    target = open_run(run)
    tok = target.tokenizer()
    tok.padding_side = "right"
    enc = tok(texts, padding=True, return_tensors="pt")
    model = target.trained_model().eval()
    with torch.inference_mode():
        return model(enc["input_ids"], enc["attention_mask"])[1], model


def _without_peft(load):
    saved = sys.modules.get("peft")
    sys.modules["peft"] = None  # any use of peft now raises ImportError
    try:
        return load()
    finally:
        if saved is not None:
            sys.modules["peft"] = saved
        else:
            del sys.modules["peft"]


@pytest.mark.parametrize("method", sorted(MERGEABLE))
def test_merged_decoder_classifier_is_a_stock_class(method, cli, write_recipe, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = _train(cli, write_recipe, tmp_path, "tiny-llama", MERGEABLE[method])
    expected, model = _llmtune_logits(run)
    assert model.head.bias is None  # the head a stock decoder classifier has
    out = tmp_path / "merged"
    res = cli("export", run, "--out", out, "--merge", "--json")
    assert res.code == 0, res.err
    assert "LlamaForSequenceClassification" in json.loads(res.out)["message"]
    assert not (out / "head.safetensors").exists()

    stock = _without_peft(lambda: AutoModelForSequenceClassification.from_pretrained(out).eval())
    assert type(stock).__name__ == "LlamaForSequenceClassification"
    assert stock.config.id2label == {0: "0", 1: "1"}
    tok = AutoTokenizer.from_pretrained(out)
    with torch.inference_mode():
        got = stock(**tok(TEXTS, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_gpt2_classifier_exports_as_gpt2_class(cli, write_recipe, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = _train(cli, write_recipe, tmp_path, "tiny-gpt2", {"name": "lora", "r": 4, "target_modules": ["c_attn"]})
    expected, _ = _llmtune_logits(run)
    out = tmp_path / "merged"
    assert cli("export", run, "--out", out, "--merge").code == 0
    stock = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(stock).__name__ == "GPT2ForSequenceClassification"
    tok = AutoTokenizer.from_pretrained(out)
    with torch.inference_mode():
        got = stock(**tok(TEXTS, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model,pooling", [("tiny-bert", "mean"), ("tiny-llama", "mean")])
def test_heads_no_stock_class_reproduces_stay_body_plus_head(model, pooling, cli, write_recipe, tmp_path):
    target = ["query", "value"] if model == "tiny-bert" else ["q_proj", "v_proj"]
    run = _train(cli, write_recipe, tmp_path, model, {"name": "lora", "r": 4, "target_modules": target},
                 pooling=pooling)
    out = tmp_path / "merged"
    res = cli("export", run, "--out", out, "--merge", "--json")
    assert res.code == 0, res.err
    message = json.loads(res.out)["message"]
    assert "head stays head.safetensors" in message and "pooling 'mean'" in message, message
    assert (out / "head.safetensors").exists()
    info = json.loads((out / "llmtune.json").read_text())
    assert info["export"]["loads_with"].startswith("AutoModel.from_pretrained")


def test_causal_soft_prompt_exports_in_peft_prompt_tuning_format(cli, write_recipe, tmp_path):
    from peft import PeftModel

    from llmtune.models.builtin import build_tiny

    run = _train(cli, write_recipe, tmp_path, "tiny-llama", {"name": "soft-prompt", "num_virtual_tokens": 5},
                 task="sft")
    out = tmp_path / "exported"
    res = cli("export", run, "--out", out, "--json")
    assert res.code == 0, res.err
    assert "peft's prompt-tuning format" in json.loads(res.out)["message"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 5

    texts = ["### Instruction:\nName a fruit.", "### Instruction:\nSay hi."]
    expected, model = _llmtune_logits(run, texts)
    plain = PeftModel.from_pretrained(build_tiny("tiny-llama", "sft"), str(out)).eval()
    from llmtune.models.load import load_tokenizer

    tok = load_tokenizer("tiny-llama")
    tok.padding_side = "right"
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        got = plain(**enc).logits[:, 5:]  # peft returns the virtual positions first
        base = build_tiny("tiny-llama", "sft")(**enc).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert (got - base).abs().max() > 1e-3  # the prompt is really applied


def test_classification_soft_prompt_says_why_no_peft_form(cli, write_recipe, tmp_path):
    run = _train(cli, write_recipe, tmp_path, "tiny-bert", {"name": "soft-prompt", "num_virtual_tokens": 3},
                 pooling="mean")
    res = cli("export", run, "--out", tmp_path / "exported", "--json")
    assert res.code == 0, res.err
    assert "no peft form" in json.loads(res.out)["message"]
    assert not (tmp_path / "exported" / "adapter_config.json").exists()


def test_lora_on_minilm_records_the_public_base_name(cli, write_recipe, tmp_path):
    run = _train(cli, write_recipe, tmp_path, "minilm", {"name": "lora", "r": 2, "target_modules": ["query"]},
                 pooling="mean")
    out = tmp_path / "exported"
    assert cli("export", run, "--out", out).code == 0
    for folder in (run / "final", out):
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
        card = (folder / "README.md").read_text() if (folder / "README.md").exists() else ""
        assert "site-packages" not in card


def test_public_name_of_local_folders(tmp_path):
    from llmtune.models.builtin import minilm_path
    from llmtune.models.public_name import public_name

    named, plain = tmp_path / "named", tmp_path / "plain"
    named.mkdir(), plain.mkdir()
    (named / "config.json").write_text(json.dumps({"_name_or_path": "org/some-model"}))
    (plain / "config.json").write_text(json.dumps({"_name_or_path": str(tmp_path / "elsewhere")}))
    assert public_name(str(named)) == "org/some-model"  # what the folder's config says
    assert public_name(str(plain)) == str(plain)  # else the path the user gave
    assert public_name(str(minilm_path())) == "sentence-transformers/all-MiniLM-L6-v2"
    assert public_name("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert public_name("") == ""


def test_a_biased_decoder_head_from_an_older_run_still_loads_and_exports_as_body_plus_head(tmp_path):
    from safetensors.torch import save_file

    from llmtune.models.builtin import build_tiny, load_tiny_tokenizer
    from llmtune.models.task_model import HEAD_FILE, TaskModel
    from llmtune.runs.export_classifier import reference_logits, write_stock_classifier

    model = TaskModel(build_tiny("tiny-llama", "classification"), "classification", num_labels=2, pooling="last")
    assert model.head.bias is None
    save_file({"weight": torch.randn(2, 64), "bias": torch.randn(2)}, str(tmp_path / HEAD_FILE))
    model.load_head(tmp_path)  # a head.safetensors written before decoder heads lost their bias
    assert model.head.bias is not None
    tok = load_tiny_tokenizer()
    out = tmp_path / "out"
    out.mkdir()
    stock = write_stock_classifier(model, model.body, tok, ["0", "1"], out, reference_logits(model, tok))
    assert stock.cls is None and "has a bias" in stock.why_not and not any(out.iterdir())
