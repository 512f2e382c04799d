"""Write embeddings chunk by chunk: .parquet (default), .npy or .jsonl.

Every writer writes to a temporary file beside the target and renames it when closed, so a
crash or Ctrl-C never leaves a half-written output that looks complete.

- .parquet: columns `id` (int64, or string when the ids are strings) and `embedding`
  (list<float32>); the run's settings are stored in the schema metadata under `llmtune`.
- .npy: a float32 (rows, dim) matrix, rows in input order. When the ids are not simply the
  row index (an --id-column was given), they go to a sidecar FILE.ids.jsonl (one JSON
  value a line). The header is rewritten at close, when the row count is known.
- .jsonl: one {"id": ..., "embedding": [...]} object a line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llmtune.errors import DataError, UserError

FORMATS = (".parquet", ".npy", ".jsonl")


def output_path(out: Path) -> Path:
    """`out` with a known suffix (none given: .parquet)."""
    out = Path(out)
    if out.suffix == "":
        return out.with_name(out.name + ".parquet")
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"--out {out}: unknown output type {out.suffix!r}; use .parquet, .npy or .jsonl")
    return out


def check_output(out: Path, input_path: Path, *, sidecar_ids: bool) -> None:
    """Refuse an --out that cannot be written, or that would replace the input, before the
    model loads: the rename at the end replaces whatever file --out names."""
    out = Path(out)
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; name a file to write, e.g. --out {out / 'vectors.parquet'}")
    finals = [out] + ([ids_sidecar(out)] if sidecar_ids and out.suffix.lower() == ".npy" else [])
    for final in finals:
        if final.exists() and os.path.samefile(final, input_path):
            raise UserError(f"--out {out}: writing {final} would replace the input file {input_path} with "
                            f"the embeddings; choose another --out")


def ids_sidecar(out: Path) -> Path:
    return Path(out).with_suffix(".ids.jsonl")


def open_writer(out: Path, *, sidecar_ids: bool, metadata: dict | None = None):
    out = output_path(out)
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    cls = {".parquet": ParquetOut, ".npy": NpyOut, ".jsonl": JsonlOut}[out.suffix.lower()]
    return cls(out, sidecar_ids=sidecar_ids, metadata=metadata or {})


class _Atomic:
    """Writes go to a hidden temp file; close() renames it into place, abort() deletes it."""

    def __init__(self, out: Path, *, sidecar_ids: bool, metadata: dict):
        self.out = out
        self.tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        self.metadata = metadata
        self.rows = 0
        self.id_kind: type | None = None

    def _check_ids(self, ids: list[Any], first_row: int) -> None:
        for offset, value in enumerate(ids):
            kind = str if isinstance(value, str) else int
            if self.id_kind is None:
                self.id_kind = kind
            elif kind is not self.id_kind:
                raise DataError(f"row {first_row + offset}: id {value!r} is a {kind.__name__} but earlier ids are "
                                f"{self.id_kind.__name__}s; ids must be all integers or all strings")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        self._close_handles()
        for path in self._temps():
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self._finish()
        self._close_handles()
        for tmp, final in zip(self._temps(), self._finals()):
            os.replace(tmp, final)

    def _temps(self) -> list[Path]:
        return [self.tmp]

    def _finals(self) -> list[Path]:
        return [self.out]

    def _finish(self) -> None:
        pass

    def _close_handles(self) -> None:
        pass


class ParquetOut(_Atomic):
    def __init__(self, out: Path, **kw):
        super().__init__(out, **kw)
        self._writer = None

    def write(self, ids: list[Any], vectors) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._check_ids(ids, self.rows)
        n, dim = vectors.shape
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
        offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int32), type=pa.int32())
        embedding = pa.ListArray.from_arrays(offsets, flat)
        id_type = pa.string() if self.id_kind is str else pa.int64()
        table = pa.table({"id": pa.array(ids, type=id_type), "embedding": embedding})
        if self._writer is None:
            schema = table.schema.with_metadata({"llmtune": json.dumps(self.metadata)})
            self._writer = pq.ParquetWriter(str(self.tmp), schema)
        self._writer.write_table(table)
        self.rows += n

    def _finish(self) -> None:
        if self._writer is None:  # no rows: still a valid file with the two columns
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pa.schema([("id", pa.int64()), ("embedding", pa.list_(pa.float32()))],
                               metadata={"llmtune": json.dumps(self.metadata)})
            pq.write_table(schema.empty_table(), str(self.tmp))

    def _close_handles(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# The .npy header is written as a fixed 128-byte block (format 1.0, 64-byte aligned data),
# first with a zero row count and again at close: the file can grow without knowing its
# length in advance, and numpy reads (and memory-maps) it as an ordinary .npy.
_NPY_HEADER = 128


def npy_header(rows: int, dim: int) -> bytes:
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    pad = _NPY_HEADER - 10 - len(text) - 1
    if pad < 0:
        raise ValueError("shape too large for the fixed .npy header")
    body = (text + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


class NpyOut(_Atomic):
    def __init__(self, out: Path, *, sidecar_ids: bool, **kw):
        super().__init__(out, sidecar_ids=sidecar_ids, **kw)
        self.sidecar = ids_sidecar(out) if sidecar_ids else None
        self.sidecar_tmp = self.sidecar.with_name(f".{self.sidecar.name}.tmp{os.getpid()}") if self.sidecar else None
        self.dim: int | None = None
        self._fh = open(self.tmp, "wb")
        self._fh.write(npy_header(0, 0))
        self._ids = open(self.sidecar_tmp, "w", encoding="utf-8") if self.sidecar else None

    def write(self, ids: list[Any], vectors) -> None:
        import numpy as np

        self._check_ids(ids, self.rows)
        if self.dim is None:
            self.dim = vectors.shape[1]
        self._fh.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        if self._ids is not None:
            self._ids.write("".join(json.dumps(i) + "\n" for i in ids))
        self.rows += len(ids)

    def _finish(self) -> None:
        self._fh.seek(0)
        self._fh.write(npy_header(self.rows, self.dim or 0))

    def _close_handles(self) -> None:
        for fh in (self._fh, self._ids):
            if fh is not None and not fh.closed:
                fh.close()

    def _temps(self) -> list[Path]:
        return [self.tmp] + ([self.sidecar_tmp] if self.sidecar else [])

    def _finals(self) -> list[Path]:
        return [self.out] + ([self.sidecar] if self.sidecar else [])


class JsonlOut(_Atomic):
    def __init__(self, out: Path, **kw):
        super().__init__(out, **kw)
        self._fh = open(self.tmp, "w", encoding="utf-8")

    def write(self, ids: list[Any], vectors) -> None:
        self._check_ids(ids, self.rows)
        # float32 -> Python float is exact, and json writes the shortest repr that reads
        # back to the same double, hence to the same float32.
        self._fh.write("".join(json.dumps({"id": i, "embedding": v}) + "\n" for i, v in zip(ids, vectors.tolist())))
        self.rows += len(ids)

    def _close_handles(self) -> None:
        if not self._fh.closed:
            self._fh.close()
