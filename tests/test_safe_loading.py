"""Safe loading: recipes through yaml.safe_load (a Python tag is refused, never run);
weights through safetensors; torch.load only with weights_only=True; trust_remote_code
only when the recipe asks; and a training run writes nowhere but its run directory and
the caches (LLMTUNE_CACHE, HF_HOME)."""

from __future__ import annotations

import pytest

import ast
import os
import sys
from pathlib import Path

import yaml

from conftest import ROOT, tiny_sst2

pytestmark = pytest.mark.usefixtures("one_thread")

PACKAGE = ROOT / "llmtune"


def _calls(predicate):
    """(file:line, call source) of every call in the package that `predicate` flags."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and predicate(node):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:100]}")
    return found


def _name(func) -> str:
    return ast.unparse(func) if isinstance(func, (ast.Attribute, ast.Name)) else ""


def _kw(node: ast.Call, name: str):
    return next((k.value for k in node.keywords if k.arg == name), None)


def _is_true(value) -> bool:
    return isinstance(value, ast.Constant) and value.value is True


def test_torch_load_always_has_weights_only_true():
    is_torch_load = lambda n: _name(n.func) == "torch.load"  # noqa: E731
    assert _calls(is_torch_load), "the checkpoint code reads optimizer state with torch.load; none found"
    assert not _calls(lambda n: is_torch_load(n) and not _is_true(_kw(n, "weights_only")))


def test_no_unsafe_deserialisers_in_the_package():
    banned = ("pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "yaml.full_load", "marshal.loads",
              "dill.load", "joblib.load")
    assert not _calls(lambda n: _name(n.func) in banned)
    assert not _calls(lambda n: _name(n.func).endswith("save_pretrained")
                      and isinstance(_kw(n, "safe_serialization"), ast.Constant)
                      and _kw(n, "safe_serialization").value is False)
    assert not _calls(lambda n: _name(n.func).endswith("np.load") and _is_true(_kw(n, "allow_pickle")))


def test_trust_remote_code_is_never_hard_wired_on():
    assert not _calls(lambda n: _is_true(_kw(n, "trust_remote_code")))


def test_python_tags_in_a_recipe_are_refused_and_never_run(tmp_path, cli):
    witness = tmp_path / "owned"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"model: !!python/object/apply:os.system ['touch {witness}']\n"
                      "data: {task: classification, train: x.tsv}\nmethod: {name: full}\n")
    for verb in ("validate", "train"):
        res = cli(verb, recipe)
        assert res.code == 2 and f"{recipe}:1" in res.err and "not valid YAML" in res.err
        assert "Traceback" not in res.err
    assert not witness.exists()


def test_trust_remote_code_follows_the_recipe(tmp_path, monkeypatch):
    """A local model folder, loaded as a recipe says: the flag reaches transformers as
    False unless the recipe sets it."""
    import transformers

    from llmtune.models.build import build_task_model
    from llmtune.models.builtin import build_tiny, load_tiny_tokenizer
    from llmtune.models.load import load_tokenizer
    from llmtune.recipe import recipe_from_dict

    folder = tmp_path / "local-bert"
    build_tiny("tiny-bert", "classification").save_pretrained(folder)
    load_tiny_tokenizer().save_pretrained(folder)
    seen = []
    for cls in (transformers.AutoModel, transformers.AutoTokenizer):
        real = cls.from_pretrained.__func__

        def spy(klass, *args, _real=real, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return _real(klass, *args, **{**kwargs, "trust_remote_code": False})

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))

    for asked in (False, True):
        raw = {"model": {"name": str(folder)}, "method": {"name": "full"},
               "data": {"task": "classification", "train": str(tiny_sst2(tmp_path, 4))}}
        if asked:
            raw["model"]["trust_remote_code"] = True
        recipe = recipe_from_dict(raw).recipe
        seen.clear()
        load_tokenizer(recipe.model.name, recipe.model.trust_remote_code)
        build_task_model(recipe, ["0", "1"])
        assert seen == [asked, asked]


class WriteLog:
    """Paths the process opens for writing, creates, renames or deletes while recording
    (Python-level audit events; Rust writers such as safetensors are covered by the folder
    snapshots instead). An audit hook cannot be removed, so it stays installed but idle."""

    installed = False
    active: "WriteLog | None" = None

    def __init__(self):
        self.entries: list[tuple[str, str]] = []
        if not WriteLog.installed:
            sys.addaudithook(WriteLog._hook)
            WriteLog.installed = True

    def __enter__(self):
        WriteLog.active = self
        return self

    def __exit__(self, *exc):
        WriteLog.active = None

    @staticmethod
    def _hook(event, args):
        log = WriteLog.active
        if log is None:
            return
        paths = []
        if event == "open":
            path, mode, flags = args
            if (mode and any(c in mode for c in "wax+")) or (
                    mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS):
                paths = [path]
        elif event in ("os.remove", "os.rmdir") and args[-1] is not None:
            pass  # relative to a dir fd: shutil.rmtree's inner steps, audited as "shutil.rmtree"
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
            paths = [args[0]]
        elif event == "os.rename":
            paths = list(args[:2])
        log.entries += [(event, os.fsdecode(p)) for p in paths if isinstance(p, (str, bytes, os.PathLike))]


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_a_run_writes_only_into_its_run_directory_and_caches(tmp_path, monkeypatch, cli):
    home, work, recipes = tmp_path / "home", tmp_path / "cwd", tmp_path / "recipes"
    for d in (home, work, recipes):
        d.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    data = tiny_sst2(recipes, 16)
    recipe = recipes / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name": "tiny-bert"}, "method": {"name": "lora", "target_modules": ["query"]},
        "data": {"task": "classification", "train": data.name, "eval_fraction": 0.25,
                 "columns": {"text": "sentence", "label": "label"}},
        "train": {"max_steps": 2, "batch_size": 4, "save_every": 1, "eval_every": 1},
        "output": {"dir": str(tmp_path / "out" / "run")},
    }))
    before = {d: _snapshot(d) for d in (home, work, recipes)}

    with WriteLog() as log:
        res = cli("train", recipe)
        assert res.code == 0, res.err
        res = cli("train", recipe, "--resume")
        assert res.code == 0, res.err

    import getpass
    import tempfile

    allowed = [(tmp_path / "out" / "run").resolve(), Path(os.environ["LLMTUNE_CACHE"]).resolve(),
               Path(os.environ["HF_HOME"]).resolve(),
               # torch's own compile cache, created whatever the recipe says
               (Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}").resolve()]

    def inside(event: str, path: str) -> bool:
        p = Path(path).resolve()
        if event == "os.mkdir" and any(a.is_relative_to(p) for a in allowed):
            return True  # makedirs walking down to an allowed folder
        return any(p.is_relative_to(a) for a in allowed) or path.startswith(("/dev/", "/proc/"))

    assert log.entries, "the audit hook saw nothing; the check would be vacuous"
    outside = sorted({(e, p) for e, p in log.entries if not inside(e, p)})
    assert not outside, outside
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run"]
    for d, snap in before.items():
        assert _snapshot(d) == snap, f"{d} changed"
    # Weights are safetensors; the only .pt files are optimizer/scheduler/RNG state, which
    # torch.load reads with weights_only=True.
    run = tmp_path / "out" / "run"
    pickles = {p.name for p in run.rglob("*") if p.suffix in (".pt", ".bin", ".pth", ".pkl", ".ckpt")}
    assert pickles <= {"optimizer.pt", "scheduler.pt", "rng.pt"}
    assert (run / "final" / "adapter_model.safetensors").exists()
