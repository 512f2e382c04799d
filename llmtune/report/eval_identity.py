"""What a final evaluation scored, and the refusal to rank runs that scored different things.

`eval_identity` = {fingerprint, rows, labels, metric}: a hash of the eval rows' content (the
task's fields, not token ids, so a causal LM prompted on the rows and an encoder trained
for them agree), how many rows were scored, the label names in id order, and the primary
metric's name. Two runs are ranked together only when all four agree.

The identity itself is defined once, in llmtune/data/eval_identity.py: the run session
records it for trained runs and compare for prompted ones, so both kinds line up.
"""

from __future__ import annotations

import json
import string

from llmtune.errors import UserError
from llmtune.report.fields import EVAL_IDENTITY_FIELDS

def identity_key(identity) -> str | None:
    if not isinstance(identity, dict) or any(k not in identity for k in EVAL_IDENTITY_FIELDS):
        return None
    return json.dumps({k: identity[k] for k in EVAL_IDENTITY_FIELDS}, sort_keys=True)


DIFFERENCES = {"fingerprint": "the eval rows (fingerprint)", "rows": "the number of rows scored",
               "labels": "the label set", "metric": "the primary metric"}


def assign_eval_sets(records) -> tuple[dict[str, dict], dict, list]:
    """(letter -> identity, record path -> letter, records without a readable identity)."""
    sets: dict[str, dict] = {}
    by_key: dict[str, str] = {}
    assigned, unknown = {}, []
    for rec in records:
        key = identity_key(rec.get("eval_identity"))
        if key is None:
            unknown.append(rec)
            continue
        if key not in by_key:
            by_key[key] = string.ascii_uppercase[len(by_key) % 26]
            sets[by_key[key]] = rec.get("eval_identity")
        assigned[rec.path] = by_key[key]
    return sets, assigned, unknown


def check_same_eval(records, *, force: bool, shown=str) -> tuple[dict[str, dict], dict, bool]:
    """Refuse (UserError, exit 2) to rank runs evaluated differently, naming them and how
    they differ; with `force`, return the sets so the table can mark them. The bool says
    whether the runs disagree (or some cannot be checked)."""
    sets, assigned, unknown = assign_eval_sets(records)
    mixed = len(sets) > 1 or bool(unknown)
    if not mixed or force:
        return sets, assigned, mixed
    problems = []
    for letter, identity in sets.items():
        runs = ", ".join(shown(r.path) for r in records if assigned.get(r.path) == letter)
        problems.append(f"eval set {letter} ({describe(identity)}): {runs}")
    if len(sets) > 1:
        differ = [DIFFERENCES[k] for k in EVAL_IDENTITY_FIELDS
                  if len({json.dumps(s.get(k), sort_keys=True) for s in sets.values()}) > 1]
        problems.append("they differ in " + ", ".join(differ))
    for rec in unknown:
        problems.append(f"{shown(rec.path)}: its manifest has no complete eval_identity (a run from before "
                        f"llmtune recorded it), so it cannot be checked against the others")
    raise UserError(f"{len(records)} runs were not evaluated alike, so compare does not rank them together. "
                    f"Compare runs scored on the same eval split, or pass --force to tabulate them anyway "
                    f"(the table is marked)", problems)


def describe(identity: dict) -> str:
    labels = identity.get("labels")
    labels = ", ".join(map(str, labels)) if isinstance(labels, list) else "no labels"
    return (f"fingerprint {identity.get('fingerprint')}, {identity.get('rows')} rows, labels {labels}, "
            f"metric {identity.get('metric')}")
