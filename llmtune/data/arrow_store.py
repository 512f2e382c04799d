"""Tokenized examples on disk as Arrow IPC files, read back memory-mapped.

A run's examples are written a chunk at a time as they are encoded and read back without
copying: token ids stay in the (page-cached, shared) file, and an example becomes Python
lists only when a batch asks for it. So memory does not grow with the number of rows the
way a list of dicts does (docs/performance.md has the measurement).

Columns: `input_ids` (list<int32>), `labels` (list<int32>, causal tasks) or `label` (int32,
classification), and `length` / `loss_items` (int32) so that the loop's batching needs no
pass over the examples.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa


def _loss_items(labels) -> int:
    from llmtune.data.batching import loss_items

    return loss_items({"labels": labels}) if labels is not None else 1


def to_batch(examples: list[dict]) -> pa.RecordBatch:
    columns = {"input_ids": pa.array([e["input_ids"] for e in examples], type=pa.list_(pa.int32()))}
    if examples and "labels" in examples[0]:
        columns["labels"] = pa.array([e["labels"] for e in examples], type=pa.list_(pa.int32()))
    elif examples and "label" in examples[0]:
        columns["label"] = pa.array([e["label"] for e in examples], type=pa.int32())
    columns["length"] = pa.array([len(e["input_ids"]) for e in examples], type=pa.int32())
    columns["loss_items"] = pa.array([_loss_items(e.get("labels")) for e in examples], type=pa.int32())
    return pa.RecordBatch.from_pydict(columns)


class ArrowFileWriter:
    """Appends record batches; `close()` makes the file appear atomically under its name."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f"{self.path.name}.tmp{os.getpid()}")
        self._sink: Any = None
        self._writer: Any = None
        self.rows = 0

    def write(self, examples: list[dict]) -> None:
        if not examples:
            return
        batch = to_batch(examples)
        if self._writer is None:
            self._sink = pa.OSFile(str(self.tmp), "wb")
            self._writer = pa.ipc.new_file(self._sink, batch.schema)
        self._writer.write_batch(batch)
        self.rows += len(examples)

    def close(self) -> bool:
        """True if anything was written (an empty split writes no file)."""
        if self._writer is None:
            return False
        self._writer.close()
        self._sink.close()
        os.replace(self.tmp, self.path)
        return True

    def abort(self) -> None:
        for closer in (self._writer, self._sink):
            try:
                if closer is not None:
                    closer.close()
            except (OSError, pa.ArrowException):
                pass
        try:
            self.tmp.unlink()
        except OSError:
            pass


class Examples(Sequence):
    """Read-only sequence of example dicts over a memory-mapped Arrow file (or a table)."""

    def __init__(self, table: pa.Table):
        # Per written chunk, never combined: combining would copy the whole file into memory.
        self._n = table.num_rows
        self._starts = np.cumsum([0] + [len(c) for c in table.column("input_ids").chunks])
        self._ids = _chunks(table.column("input_ids"))
        self._labels = _chunks(table.column("labels")) if "labels" in table.column_names else None
        self._label = _scalars(table.column("label")) if "label" in table.column_names else None
        self._length = _scalars(table.column("length"))
        self._items = _scalars(table.column("loss_items"))

    @classmethod
    def open(cls, path: Path) -> "Examples":
        source = pa.memory_map(str(path), "r")
        return cls(pa.ipc.open_file(source).read_all())

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        if index < 0:
            index += self._n
        if not 0 <= index < self._n:
            raise IndexError(index)
        chunk = int(np.searchsorted(self._starts, index, side="right")) - 1
        at = index - int(self._starts[chunk])
        example = {"input_ids": _row(self._ids[chunk], at)}
        if self._labels is not None:
            example["labels"] = _row(self._labels[chunk], at)
        if self._label is not None:
            example["label"] = int(self._label[index])
        return example

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and all(a == b for a, b in zip(self, other))

    def lengths(self) -> list[int]:
        return self._length.tolist()

    def loss_items(self) -> list[int]:
        return self._items.tolist()


def _chunks(column: pa.ChunkedArray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(offsets, values) of each chunk of a list column, as zero-copy numpy views."""
    return [(np.asarray(c.offsets), np.asarray(c.values)) for c in column.chunks]


def _scalars(column: pa.ChunkedArray) -> np.ndarray:
    """A small int32 column (one number per example) in memory."""
    return np.concatenate([np.asarray(c) for c in column.chunks]) if column.num_chunks else np.zeros(0, np.int32)


def _row(flat: tuple[np.ndarray, np.ndarray], i: int) -> list[int]:
    offsets, values = flat
    return values[offsets[i]:offsets[i + 1]].tolist()


def lengths_of(examples) -> list[int]:
    """Token counts of any examples sequence (read off the column when it is an Arrow one)."""
    if isinstance(examples, Examples):
        return examples.lengths()
    return [len(e["input_ids"]) for e in examples]


def loss_items_of(examples) -> list[int]:
    if isinstance(examples, Examples):
        return examples.loss_items()
    from llmtune.data.batching import loss_items

    return [loss_items(e) for e in examples]
