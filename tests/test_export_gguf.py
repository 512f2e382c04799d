"""`llmtune export RUN --format gguf`: the file transformers reads back computes what the run
computes for every weight type, the tokenizer survives the round trip, the Modelfile carries a
translated template, a corrupted file fails the check (exit 1, nothing left behind), and runs
that no GGUF file can hold exit 2 saying what would work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from llmtune.console import Reporter

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "recipes" / "data"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory) -> Path:
    """A tiny Llama trained with LoRA for a few steps at a high rate (so merging matters)."""
    import torch

    from llmtune.recipe.load import recipe_from_dict
    from llmtune.train.session import run_recipe

    root = tmp_path_factory.mktemp("gguf-runs")
    raw = {"model": {"name": "tiny-llama"},
           "data": {"task": "sft", "train": {"path": str(DATA / "alpaca_tiny.json"), "limit": 16},
                    "max_length": 64, "eval_fraction": 0.0},
           "method": {"name": "lora", "r": 4, "target_modules": "all-linear"},
           "train": {"max_steps": 3, "batch_size": 8, "lr": 2e-2, "log_every": 3}}
    with pytest.MonkeyPatch.context() as mp, torch.random.fork_rng():
        mp.setenv("LLMTUNE_CACHE", str(root / "cache"))
        torch.set_num_threads(1)
        run_recipe(recipe_from_dict(raw), Reporter(quiet=True), output=root / "lora-run")
    return root / "lora-run"


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory) -> dict[str, Path]:
    """A full finetune (final/ holds the whole model) and a DPO policy trained with LoRA (trl's
    adapter, merged by the policy's own merge), a couple of steps each."""
    import torch

    from llmtune.recipe.load import load_recipe, recipe_from_dict
    from llmtune.train.session import run_recipe

    root = tmp_path_factory.mktemp("gguf-other-runs")
    full = {"model": {"name": "tiny-llama"},
            "data": {"task": "sft", "train": {"path": str(DATA / "alpaca_tiny.json"), "limit": 8},
                     "max_length": 48, "eval_fraction": 0.0},
            "method": {"name": "full"}, "train": {"max_steps": 2, "batch_size": 4, "lr": 2e-3, "log_every": 2}}
    recipes = {"full": recipe_from_dict(full),
               "dpo": load_recipe(ROOT / "recipes" / "dpo-tiny-sharegpt-lora.yaml",
                                  ["train.max_steps=2", "data.eval_fraction=0.0"])}
    with pytest.MonkeyPatch.context() as mp, torch.random.fork_rng():
        mp.setenv("LLMTUNE_CACHE", str(root / "cache"))
        torch.set_num_threads(1)
        for name, loaded in recipes.items():
            run_recipe(loaded, Reporter(quiet=True), output=root / name)
    return {name: root / name for name in recipes}


@pytest.mark.parametrize("name", ["full", "dpo"])
def test_full_runs_and_lora_policies_export(other_runs, tmp_path, name):
    result = _export(other_runs[name], tmp_path / "out", "q8_0")
    assert result["parity"]["conversion"]["relative"] <= 1e-5 and result["parity"]["tokenizer_mismatches"] == []
    assert result["method"] == name and (tmp_path / "out" / result["file"]).is_file()


def _export(run: Path, out: Path, quant: str) -> dict:
    from llmtune.runs.export_gguf import export_gguf

    return export_gguf(run, out, quant=quant, overwrite=False, reporter=Reporter(quiet=True))


@pytest.mark.parametrize("quant", ["f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0"])
def test_every_type_reads_back_and_matches_the_run(lora_run, tmp_path, quant):
    import gguf

    from llmtune.runs.gguf_parity import TOLERANCES

    result = _export(lora_run, tmp_path / "out", quant)
    parity = result["parity"]
    # The file equals the merged weights rounded as stored (float32 noise at most) ...
    assert parity["conversion"]["relative"] <= 1e-5, parity
    # ... and stays within the type's drift tolerance of the unmerged run.
    assert parity["drift"]["mean_kl"] <= TOLERANCES[quant], parity
    assert parity["tokenizer_mismatches"] == []
    reader = gguf.GGUFReader(tmp_path / "out" / result["file"])
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == quant.upper() and kinds["blk.0.attn_norm.weight"] == "F32"
    # 4- and 5-bit types keep the embedding and output matrices in q8_0, as llama.cpp's quantizer does
    wider = "Q8_0" if quant[1] in "45" else quant.upper()
    assert kinds["token_embd.weight"] == kinds["output.weight"] == wider
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Modelfile", "llmtune.json", result["file"]]


def test_the_merge_is_checked_against_the_unmerged_run(lora_run, tmp_path):
    """The drift reference is the run as it runs (LoRA unmerged): a merge that dropped the
    adapter would show up as drift, not pass silently."""
    import torch

    from llmtune.runs.export_gguf import merged_model
    from llmtune.runs.gguf_parity import compare_logits, logits_of
    from llmtune.runs.open import open_run

    from llmtune.models.builtin import build_tiny

    run = merged_model(open_run(lora_run))
    assert compare_logits(run.logits, run.body, run.prompts).relative < 1e-4  # merged == unmerged
    untrained = build_tiny("tiny-llama", "sft").to(torch.float32).eval()
    assert compare_logits(run.logits, untrained, run.prompts).relative > 0.05, \
        "the LoRA run should differ from its base, or this test proves nothing"
    assert len(logits_of(untrained, run.prompts)) == len(run.prompts) >= 4  # plain and chat prompts


def test_cli_writes_the_file_modelfile_and_record(lora_run, tmp_path, cli):
    out = tmp_path / "gguf"
    r = cli("export", lora_run, "--format", "gguf", "--quant", "q8_0", "--out", out, "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["format"] == "gguf" and doc["quant"] == "q8_0" and (out / doc["file"]).is_file()
    info = json.loads((out / "llmtune.json").read_text())
    assert info["export"]["format"] == "gguf" and info["export"]["parity"]["drift"] == doc["parity"]["drift"]
    modelfile = (out / "Modelfile").read_text()
    assert f"FROM ./{doc['file']}\n" in modelfile and 'PARAMETER stop "</s>"' in modelfile
    again = cli("export", lora_run, "--format", "gguf", "--out", out)
    assert again.code == 2 and "--overwrite" in again.err
    replaced = cli("export", lora_run, "--format", "gguf", "--out", out, "--overwrite")
    assert replaced.code == 0, replaced.err
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "llmtune.json", "lora-run-f16.gguf"]


def test_tokenizer_and_template_survive_the_round_trip(lora_run, tmp_path):
    import gguf
    from transformers import AutoTokenizer

    from llmtune.models.load import load_tokenizer

    result = _export(lora_run, tmp_path / "out", "f16")
    path = tmp_path / "out" / result["file"]
    run_tok = load_tokenizer(str(lora_run / "final"))
    file_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in ["A new sentence, unlike the samples: 42 apples!", "<s>user\nhi</s>\n", "\n\n  x  \t y",
                 "ünïcödé and ひらがな"]:
        assert file_tok(text)["input_ids"] == run_tok(text)["input_ids"], text
    chat = [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "Bye."}]
    assert file_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
        run_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    fields = gguf.GGUFReader(path).fields
    assert fields["tokenizer.ggml.pre"].contents() == "gpt-2"
    assert fields["tokenizer.ggml.eos_token_id"].contents() == run_tok.eos_token_id
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False
    assert "% generation" not in fields["tokenizer.chat_template"].contents()  # llama.cpp cannot parse it
    assert len(fields["tokenizer.ggml.tokens"].contents()) == len(run_tok)


def test_a_corrupted_tensor_fails_the_check(lora_run, tmp_path):
    import gguf

    from llmtune.runs.export_gguf import merged_model
    from llmtune.runs.gguf_parity import ParityFailed, check
    from llmtune.runs.open import open_run

    result = _export(lora_run, tmp_path / "out", "f32")
    path = tmp_path / result["file"]
    shutil.copy(tmp_path / "out" / result["file"], path)
    reader = gguf.GGUFReader(path, mode="r+")
    tensor = next(t for t in reader.tensors if t.name == "blk.1.ffn_down.weight")
    tensor.data[0, :] = 0.5  # one row of one matrix
    reader.data.flush()
    del reader
    with pytest.raises(ParityFailed) as failed:
        check(path, merged_model(open_run(lora_run)), {}, "f32")
    assert failed.value.report["conversion"]["relative"] > 1e-3
    assert "written wrongly" in str(failed.value)


def test_a_wrong_layout_exits_1_and_leaves_nothing(lora_run, tmp_path, cli, monkeypatch):
    """The classic conversion bug: query/key rows not interleaved for llama.cpp's rotary
    embedding. The check catches it; no file that looks finished is left."""
    from llmtune.runs import gguf_tensors

    monkeypatch.setattr(gguf_tensors, "_interleave", lambda a, heads: a)
    out = tmp_path / "bad"
    r = cli("export", lora_run, "--format", "gguf", "--out", out)
    assert r.code == 1, r.err
    assert "parity check failed" in r.err and "written wrongly" in r.err
    assert list(tmp_path.iterdir()) == []


def _recipe_only_run(root: Path, name: str, raw: dict) -> Path:
    """A run directory as far as deciding what it holds needs: the resolved recipe and final/."""
    run = root / name
    (run / "final").mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(raw))
    return run


@pytest.mark.parametrize("name,raw,says", [
    ("prefix", {"model": {"name": "tiny-llama"}, "data": {"task": "sft", "train": str(DATA / "alpaca_tiny.json")},
                "method": {"name": "prefix"}}, ["cannot be folded", "adapter-only export", "lora"]),
    ("classifier", {"model": {"name": "tiny-bert"},
                    "data": {"task": "classification", "train": str(DATA / "sst2_train.tsv"),
                             "columns": {"text": "sentence", "label": "label"}},
                    "method": {"name": "lora"}}, ["classification model", "--merge", "llmtune eval"]),
    ("reward", {"model": {"name": "tiny-llama"},
                "data": {"task": "preference", "train": str(DATA / "hh_rlhf_harmless_64.jsonl")},
                "method": {"name": "reward"}}, ["reward model", "generates none"]),
    ("contrastive", {"model": {"name": "minilm"},
                     "data": {"task": "retrieval", "train": str(DATA / "cranfield" / "pairs_train.jsonl"),
                              "eval": str(DATA / "cranfield" / "queries_test.jsonl"),
                              "retrieval": {"documents": str(DATA / "cranfield" / "documents.jsonl"),
                                            "qrels": str(DATA / "cranfield" / "qrels.tsv")}},
                     "method": {"name": "contrastive"}}, ["sentence encoder", "index --encoder"]),
])
def test_runs_without_a_mergeable_causal_lm_exit_2(tmp_path, cli, name, raw, says):
    run = _recipe_only_run(tmp_path, name, raw)
    r = cli("export", run, "--format", "gguf", "--out", tmp_path / "out")
    assert r.code == 2, r.err
    assert all(s in r.err for s in says), r.err
    assert "Traceback" not in r.err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,says", [
    (["--format", "gguf", "--quant", "q4_k_m"], "llama-quantize"),
    (["--quant", "q8_0"], "--format gguf only"),
    (["--format", "onnx"], "use transformers"),
])
def test_bad_flags_exit_2(lora_run, tmp_path, cli, args, says):
    r = cli("export", lora_run, "--out", tmp_path / "out", *args)
    assert r.code == 2 and says in r.err, r.err


def test_architectures_the_writer_does_not_cover_exit_2():
    from transformers import BertConfig, GPT2Config

    from llmtune.errors import UserError
    from llmtune.runs.gguf_tensors import arch_for

    with pytest.raises(UserError, match="covers the gpt2, llama, qwen2, qwen3 architectures.*'bert'"):
        arch_for(BertConfig())
    with pytest.raises(UserError, match="n_positions 512"):
        arch_for(GPT2Config(n_positions=512))  # llmtune's tiny-gpt2: the reader could not check it


def _tiny(config_cls, **kw):
    import torch

    from llmtune.models.builtin import load_tiny_tokenizer
    from tiny_lm import trained_scale

    tok = load_tiny_tokenizer()
    torch.manual_seed(0)
    from transformers import AutoModelForCausalLM

    body = AutoModelForCausalLM.from_config(config_cls(vocab_size=len(tok), **kw)).to(torch.float32)
    trained_scale(body)
    return body, tok


@pytest.mark.parametrize("kind", ["llama-tied", "qwen2", "qwen3", "gpt2"])
def test_other_architectures_round_trip(tmp_path, kind):
    import gguf
    from transformers import GPT2Config, LlamaConfig, Qwen2Config, Qwen3Config

    from llmtune.runs.export_gguf import plain_run, write_checked
    from llmtune.runs.gguf_parity import TOLERANCES

    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256)
    made = {"llama-tied": lambda: _tiny(LlamaConfig, tie_word_embeddings=True, **shape),
            "qwen2": lambda: _tiny(Qwen2Config, **shape),
            "qwen3": lambda: _tiny(Qwen3Config, head_dim=128, **shape),  # the reader's only head_dim
            "gpt2": lambda: _tiny(GPT2Config, n_embd=64, n_layer=2, n_head=4)}[kind]
    body, tok = made()
    path = tmp_path / "m.gguf"
    written, _, report = write_checked(path, plain_run(body, tok), "q8_0")
    assert report["conversion"]["relative"] <= 1e-5 and report["drift"]["mean_kl"] <= TOLERANCES["q8_0"], report
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert ("output.weight" in names) == (not body.config.tie_word_embeddings)


def test_chat_and_generate_run_the_exported_folder_as_the_run(lora_run, tmp_path, cli, monkeypatch):
    """`llmtune generate`/`chat` open an `export --format gguf` folder through its .gguf file; an
    f32 file holds the merged weights exactly, so greedy answers equal the run's own."""
    import io
    import sys

    out = tmp_path / "gguf"
    assert cli("export", lora_run, "--format", "gguf", "--quant", "f32", "--out", out).code == 0
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Name a colour."}\n{"instruction": "Add 2 and 3."}\n')
    answers = {}
    for name, source in (("run", lora_run), ("gguf", out)):
        r = cli("generate", source, "--input", prompts, "--out", tmp_path / f"{name}.jsonl", "--max-new-tokens", "8")
        assert r.code == 0, r.err
        answers[name] = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert [a["output"] for a in answers["gguf"]] == [a["output"] for a in answers["run"]]
    assert all(a["completion_tokens"] > 0 for a in answers["gguf"])
    monkeypatch.setattr(sys, "stdin", io.StringIO("Name a colour.\n"))
    chat = cli("chat", out, "--max-new-tokens", "8")
    assert chat.code == 0, chat.err
    # piped chat writes one answer per line, newlines and backslashes escaped
    escaped = answers["run"][0]["output"].replace("\\", "\\\\").replace("\n", "\\n")
    assert chat.out.splitlines() == [escaped]
