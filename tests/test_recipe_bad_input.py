"""Mistakes a new user makes, each refused at `llmtune validate` (exit 2) with a message that
names the key and the fix: found by trying the tool as a newcomer would (issue 27)."""

from __future__ import annotations

import os

import pytest

from llmtune.errors import RecipeError
from llmtune.recipe import load_recipe

RECIPE = """\
model:
  name: {model}
data:
  task: classification
  train: {train}
  columns: {{text: sentence}}
method:
  name: lora
  r: 8
train:
  epochs: 1
"""


@pytest.fixture
def recipe(write_recipe, tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")

    def make(model: str = "tiny-bert", train: str = "train.tsv"):
        return write_recipe(RECIPE.format(model=model, train=train))

    return make


def _problems(path, overrides=()) -> str:
    with pytest.raises(RecipeError) as err:
        load_recipe(path, list(overrides))
    return err.value.render()


@pytest.mark.parametrize("override,needle", [
    ("train.epochs=1e300", "train.epochs: input should be less than or equal to 10000"),
    ("train.max_steps=10000000000", "train.max_steps: input should be less than or equal to 1000000000"),
])
def test_a_plan_beyond_any_sane_run_is_refused(recipe, override, needle):
    assert needle in _problems(recipe(), [override])


@pytest.mark.parametrize("override,needle", [
    ("method.r=true", "method.r: expected an integer, got the boolean true"),
    ("train.lr=yes", "train.lr: expected a number, got the boolean true"),
    ("train.max_grad_norm=false", "train.max_grad_norm: expected a number, got the boolean false"),
])
def test_a_boolean_is_not_a_number(recipe, override, needle):
    assert needle in _problems(recipe(), [override])


def test_booleans_still_set_switches(recipe):
    loaded = load_recipe(recipe(), ["method.dora=true", "train.packing=false"])
    assert loaded.recipe.method.dora is True and loaded.recipe.train.packing is False


def test_a_folder_without_config_json_is_not_a_model(recipe, tmp_path, cli):
    folder = tmp_path / "downloads"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model")
    text = _problems(recipe(model=str(folder)))
    assert f"model.name: {folder} is not a model folder: it has no config.json" in text
    assert "a model folder holds config.json, the weights" in text
    # The loader says the same when the folder is met outside a recipe (eval, embed...).
    from llmtune.errors import UserError
    from llmtune.models.load import load_body

    with pytest.raises(UserError, match="is not a model folder: it has no config.json"):
        load_body(str(folder), "classification")
    res = cli("validate", recipe(model=str(folder)))
    assert res.code == 2 and "not a model folder" in res.err and "Traceback" not in res.err


def test_a_missing_local_model_folder_is_named(recipe, tmp_path):
    assert "model.name: no such folder" in _problems(recipe(model=str(tmp_path / "nowhere")))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_not_a_data_file(recipe, tmp_path):
    os.mkfifo(tmp_path / "rows.tsv")
    text = _problems(recipe(train="rows.tsv"))
    assert f"data.train.path: {tmp_path / 'rows.tsv'}: a named pipe, not a regular file" in text
    assert "directory" not in text


def test_a_folder_is_not_a_data_file(recipe, tmp_path):
    (tmp_path / "rows").mkdir()
    assert "data.train.path: " in _problems(recipe(train="rows"))
    assert "a folder, not a data file" in _problems(recipe(train="rows"))


@pytest.mark.parametrize("template,needle", [
    ("{{ text.__class__ }}", "refuses the attribute '__class__'"),
    ("{{ text['__class__'] }}", "refuses the attribute '__class__'"),
    ("{{ text|attr('__init__') }}", "refuses the attribute '__init__'"),
    ("{{ range(10**9)|length }}", None),  # not a constant: left to the sandbox at eval time
    ("{{ range(1000000)|length }}", "refuses a range of more than 100,000 items"),
])
def test_templates_the_sandbox_refuses_are_refused_at_validate(recipe, template, needle):
    path = recipe()
    overrides = [f"eval.templates=[\"{template}\"]", "eval.shots=0", "method={name: in-context}"]
    if needle is None:
        load_recipe(path, overrides)
        return
    assert f"eval.templates.0: the evaluation renders templates in a sandbox, which {needle}" \
        in _problems(path, overrides)


def test_the_sandbox_refuses_at_eval_time_what_validate_refuses():
    """The validate check follows the sandbox: each template it refuses fails to render there."""
    from jinja2.exceptions import SecurityError

    from llmtune.evaluate.templates import compile_templates

    for source in ("{{ text.__class__ }}", "{{ text['__class__'] }}", "{{ text|attr('__init__') }}"):
        with pytest.raises(SecurityError):
            compile_templates([source])[0]._compiled.render(text="a row")


def test_problems_are_listed_in_line_order(write_recipe, tmp_path):
    path = write_recipe("""\
model: {name: tiny-bert, bogus: 1}
data:
  task: classification
  train: nothere.tsv
method: {name: lora, r: abc}
train: {epochs: -1, lr: fast}
""")
    lines = [ln for ln in _problems(path, ["train.seed=x"]).splitlines() if ln.strip().startswith("- ")]
    where = [ln.split()[1] for ln in lines]
    assert where[0] == "--set"  # what the command line changed comes first
    numbers = [int(w.rsplit(":", 1)[1]) for w in where[1:]]
    assert numbers == sorted(numbers) == [1, 4, 5, 6, 6]


def test_a_renamed_key_says_what_to_write_now(recipe):
    text = _problems(recipe(), ["train.fused_lora=false"])
    assert "train.fused_lora: renamed: write `train.fused_forward: false` instead" in text
    assert "unknown key" not in text
