"""The worker's handlers for embeddings and classification. Requests that waited together
arrive as one batch: their texts are tokenized per request (each keeps its own usage
count) and run through the model together, length-sorted, so eight clients embedding one
sentence each cost one padded forward, not eight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmtune.serve.served import Served
    from llmtune.serve.worker import Job


@dataclass
class EmbedJob:
    texts: list[str]


@dataclass
class ClassifyJob:
    texts: list[str]
    pairs: list[str] | None


def embed_batch(served: Served, jobs: list[Job]) -> None:
    """Each job finishes with (float32 array of its vectors, its prompt token count)."""
    encoder = served.encoder
    per_job = [encoder.tokenize(job.payload.texts) for job in jobs]
    flat = [ids for rows in per_job for ids in rows]
    vectors = encoder.embed_ids(flat).numpy()
    start = 0
    for job, rows in zip(jobs, per_job):
        job.finish((vectors[start:start + len(rows)], sum(len(x) for x in rows)))
        start += len(rows)


def classify_batch(served: Served, jobs: list[Job]) -> None:
    """Each job finishes with (its Scored rows, its prompt token count)."""
    classifier = served.classifier
    per_job = [classifier.tokenize(job.payload.texts, job.payload.pairs) for job in jobs]
    scored = classifier.score_ids([ids for rows in per_job for ids in rows])
    start = 0
    for job, rows in zip(jobs, per_job):
        job.finish((scored[start:start + len(rows)], sum(len(x) for x in rows)))
        start += len(rows)
