"""Recipe loading: schema, line-numbered errors, suggestions, overrides."""

from __future__ import annotations

import pytest

from llmtune.errors import RecipeError
from llmtune.recipe import load_recipe
from llmtune.recipe.load import apply_override

GOOD = """\
model:
  name: minilm
data:
  task: classification
  train: {train}
  columns: {{text: sentence}}
method:
  name: lora
  r: 8
train:
  lr: 1.0e-3
"""


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    return path


def test_good_recipe_fills_defaults(write_recipe, train_file):
    loaded = load_recipe(write_recipe(GOOD.format(train=train_file.name)))
    r = loaded.recipe
    assert r.method.name == "lora" and r.method.r == 8 and r.method.alpha == 16
    # Paths are resolved once, at load: later stages only see absolute paths.
    assert r.data.train.path == str(train_file)
    assert r.train.batch_size == 16 and r.train.lr == 1e-3
    assert loaded.path.parent == train_file.parent


def test_typo_wrong_type_and_missing_file_reported_together_with_lines(cli, write_recipe):
    text = """\
model:
  name: minilm
data:
  task: classification
  train: nowhere.tsv
method:
  name: lora
  lora_alpah: 16
train:
  lr: fast
"""
    res = cli("train", write_recipe(text))
    assert res.code == 2
    assert "Traceback" not in res.err
    assert "3 problems" in res.err
    assert "recipe.yaml:8 method.lora_alpah: unknown key" in res.err
    assert "recipe.yaml:10 train.lr:" in res.err and "'fast'" in res.err
    assert "recipe.yaml:5 data.train.path: file not found" in res.err


def test_did_you_mean_suggests_nearest_key(write_recipe, train_file):
    text = GOOD.format(train=train_file.name).replace("  r: 8", "  rank: 8\n  dropuot: 0.1")
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(text))
    rendered = err.value.render()
    assert "did you mean 'dropout'?" in rendered
    assert "method.rank: unknown key" in rendered


def test_unknown_section_and_method_name(write_recipe, train_file):
    text = GOOD.format(train=train_file.name).replace("name: lora", "name: lorra") + "trian:\n  lr: 1\n"
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(text))
    rendered = err.value.render()
    assert "unknown method 'lorra'; did you mean 'lora'?" in rendered
    assert "trian: unknown key; did you mean 'train'?" in rendered


def test_missing_sections_are_named(write_recipe):
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe("model:\n  name: minilm\n"))
    rendered = err.value.render()
    assert "data: required key is missing" in rendered
    assert "method: required key is missing" in rendered


def test_out_of_range_value(write_recipe, train_file):
    text = GOOD.format(train=train_file.name).replace("r: 8", "r: 0")
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(text))
    assert "recipe.yaml:9 method.r: input should be greater than 0 (got 0)" in err.value.render()


def test_bad_yaml_names_line(write_recipe):
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe("model:\n  name: [minilm\ndata: 1\n"))
    assert "recipe.yaml:3" in str(err.value) and "not valid YAML" in str(err.value)


def test_python_tags_are_refused(write_recipe):
    with pytest.raises(RecipeError):
        load_recipe(write_recipe("model: !!python/object/apply:os.system ['echo hi']\n"))


def test_overrides_apply_and_are_validated(write_recipe, train_file):
    path = write_recipe(GOOD.format(train=train_file.name))
    loaded = load_recipe(path, ["train.lr=5e-4", "method.dora=true", "data.train.limit=1"])
    assert loaded.recipe.train.lr == 5e-4 and loaded.recipe.method.dora is True
    assert loaded.recipe.data.train.limit == 1
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["train.epochs=-1", "method.rr=2", "nonsense"])
    rendered = err.value.render()
    assert "--set train.epochs: input should be greater than 0" in rendered
    assert "--set method.rr: unknown key; did you mean 'r'?" in rendered
    assert "method.rr method.rr" not in rendered  # the key path once, not twice
    with pytest.raises(RecipeError) as err:  # the shorthand given by --set is checked like the recipe's
        load_recipe(path, ["data.train=nope.tsv"])
    assert "--set data.train" in err.value.render() and "file not found" in err.value.render()
    assert "--set nonsense: expected KEY.PATH=VALUE" in rendered


def test_method_must_fit_task(write_recipe, train_file):
    text = GOOD.format(train=train_file.name).replace("task: classification", "task: preference")
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(text))
    assert "method 'lora' does not train task 'preference'" in err.value.render()


def test_apply_override_parses_yaml_values():
    raw = {"train": {"lr": 1}}
    apply_override(raw, "train.lr=3e-4")
    apply_override(raw, "method.target_modules=[q, v]")
    assert raw["train"]["lr"] == 3e-4 and raw["method"]["target_modules"] == ["q", "v"]


def test_validate_command_reports_all_files(cli, write_recipe, train_file):
    good = write_recipe(GOOD.format(train=train_file.name), "good.yaml")
    bad = write_recipe("model: {name: minilm}\n", "bad.yaml")
    res = cli("validate", good, bad)
    assert res.code == 2
    assert "ok: " in res.out and "bad.yaml" in res.err and "Traceback" not in res.err
    res = cli("validate", "--json", good, bad)
    assert res.code == 2
    import json

    doc = json.loads(res.out)
    assert doc["ok"] is False and [r["ok"] for r in doc["recipes"]] == [True, False]


def test_missing_demo_pool_file_is_reported(write_recipe, train_file):
    text = GOOD.format(train=train_file.name) + "eval:\n  shots: 2\n  demos: nope.jsonl\n"
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(text))
    assert "recipe.yaml:14 eval.demos.path: file not found" in err.value.render()


def test_prompt_template_fields_are_checked_at_validate_time(write_recipe, train_file):
    text = GOOD.format(train=train_file.name).replace(
        "  columns: {text: sentence}", "  columns: {text: sentence}\n  prompt_template: 'Q: {question}\\nA:'")
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(text))
    assert "recipe.yaml:7 data.prompt_template: unknown field(s) {question}" in err.value.render()
    text = GOOD.format(train=train_file.name).replace(
        "  columns: {text: sentence}", "  columns: {text: sentence}\n  prompt_template: 'Q: {instruction'")
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(text))
    assert "data.prompt_template: not a valid template" in err.value.render()
