"""The command line: instant help, exit codes, JSON outputs."""

from __future__ import annotations

import json
import subprocess
import sys

CHECK_NO_TORCH = """
import sys
from llmtune.cli import app_for
from llmtune.cli.common import run_app
sys.argv = {argv!r}
code = run_app(app_for(sys.argv[1:]))
heavy = sorted(m for m in ("torch", "transformers", "peft", "trl", "datasets", "accelerate") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
sys.exit(code)
"""


def _run(argv):
    return subprocess.run([sys.executable, "-c", CHECK_NO_TORCH.format(argv=argv)], capture_output=True, text=True,
                          timeout=60)


def test_help_imports_no_heavy_library():
    res = _run(["llmtune", "--help"])
    assert res.returncode == 0, res.stderr
    assert "HEAVY=\n" in res.stdout
    assert "train" in res.stdout and "validate" in res.stdout


def test_a_verb_starts_an_app_with_only_its_command(cli):
    from conftest import RECIPES
    from llmtune.cli import app, app_for

    assert [c.name for c in app_for(["validate", "x.yaml"]).registered_commands] == ["validate"]
    assert [c.name for c in app_for(["schema", "--json"]).registered_commands] == ["methods", "schema"]
    for argv in ([], ["--help"], ["nosuch", "x"]):
        assert app_for(argv) is app
    res = cli("validate", RECIPES / "quickstart.yaml")
    assert res.code == 0 and "ok:" in res.out, res.err
    res = cli("validate", RECIPES / "quickstart.yaml", "--bogus")
    assert res.code == 2 and "No such option: --bogus" in res.err
    res = cli("nosuch")
    assert res.code == 2 and "No such command 'nosuch'" in res.err


def test_validate_imports_no_heavy_library():
    from conftest import RECIPES

    res = _run(["llmtune", "validate", str(RECIPES / "quickstart.yaml")])
    assert res.returncode == 0, res.stderr
    assert "HEAVY=\n" in res.stdout


def test_methods_lists_registry(cli):
    res = cli("methods", "--json")
    assert res.code == 0
    doc = json.loads(res.out)
    assert {"full", "frozen-head", "lora"} <= set(doc)
    assert doc["lora"]["can_merge"] is True


def test_schema_is_json_schema(cli):
    res = cli("schema")
    doc = json.loads(res.out)
    assert set(doc["properties"]) >= {"model", "data", "method", "train", "eval", "output"}
    assert "lora" in json.dumps(doc)
    # Field docstrings become descriptions (for editors), method options included.
    assert doc["$defs"]["ModelSection"]["properties"]["name"]["description"].startswith("A built-in name")
    assert doc["$defs"]["LoraConfig"]["properties"]["r"]["description"]
    assert doc["properties"]["method"]["description"].startswith("How the model is finetuned")


def test_bad_flag_exits_2(cli):
    res = cli("train", "--no-such-flag", "x.yaml")
    assert res.code == 2
    res = cli("train", "missing.yaml")
    assert res.code == 2 and "no such recipe file" in res.err


def test_a_folder_given_as_the_recipe_is_named_as_a_folder(cli, tmp_path):
    (tmp_path / "lora.yaml").write_text("model: {name: tiny-bert}\n")
    for verb in ("validate", "train"):
        res = cli(verb, tmp_path)
        assert res.code == 2, res.err
        assert f"{tmp_path}: a folder, not a recipe file" in res.err and "lora.yaml" in res.err
        assert "no such recipe file" not in res.err


def test_eval_on_missing_target_exits_2(cli, tmp_path):
    res = cli("eval", tmp_path / "nothing")
    assert res.code == 2 and "no such run directory" in res.err
    res = cli("eval", tmp_path)
    assert res.code == 2 and "not a run directory" in res.err and "or a recipe file" in res.err
