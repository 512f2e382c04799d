"""What a contrastive run steps over: the pairs read, hard negatives mined, and every distinct
text (queries, positives, negatives) tokenized once, so a batch refers to texts by index."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmtune.methods.retrieval._batches import Row


@dataclass
class Texts:
    """Distinct texts, tokenized once (special tokens included, cut at max_length)."""

    ids: list[list[int]] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)

    def add(self, text: str) -> int:
        if text not in self.index:
            self.index[text] = len(self.index)
        return self.index[text]


def build_rows(tok, pairs, mined: dict[str, list[str]], max_length: int, side: str) -> tuple[Texts, list[Row]]:
    texts = Texts()
    rows = []
    for p in pairs:
        negatives = ([p.negative] if p.negative else []) + mined.get(p.query, [])
        rows.append(Row(texts.add(p.query), texts.add(p.positive), [texts.add(n) for n in negatives]))
    tok.truncation_side = side
    texts.ids = tok(list(texts.index), truncation=True, max_length=max_length, return_attention_mask=False,
                    return_token_type_ids=False, verbose=False)["input_ids"]
    return texts, rows


def prepare(r, method, rep):
    """(tokenizer, pairs, body on its device, tokenized texts, rows), hard negatives mined."""
    from llmtune.data.retrieval import read_pairs
    from llmtune.device import default_device
    from llmtune.methods.retrieval._retrieval_eval import retrieval_encoder
    from llmtune.models.load import load_body, load_tokenizer

    m, cfg = r.model, method.config
    tok = load_tokenizer(m.name, m.trust_remote_code, m.revision)
    pairs = read_pairs(r.data.train, r.data.columns)
    body = load_body(m.name, "retrieval", trust_remote_code=m.trust_remote_code, revision=m.revision,
                     dtype=m.dtype).to(default_device())
    mined = {}
    if cfg.hard_negatives:
        from llmtune.methods.retrieval._mining import mine

        encoder = retrieval_encoder(tok, body, r, None)
        mined = mine(encoder, r, pairs, cfg.hard_negatives, cfg.hard_negatives_skip, rep)
    texts, rows = build_rows(tok, pairs, mined, r.data.max_length, r.data.truncation_side)
    negatives = sum(len(x.negatives) for x in rows)
    rep.log(f"data: {len(rows)} training pairs, {len(texts.index)} distinct texts"
            f"{f', {negatives} negatives' if negatives else ''}")
    return tok, pairs, body, texts, rows


def pairs_fingerprint(pairs) -> str:
    import hashlib

    digest = hashlib.sha256()
    for p in pairs:
        digest.update(f"{p.query}\0{p.positive}\0{p.negative or ''}\n".encode())
    return digest.hexdigest()[:16]
