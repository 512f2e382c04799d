"""In-context learning: demonstration selection, prompt budgets, label scoring."""

from __future__ import annotations

import json
import random

import pytest

from llmtune.evaluate import icl
from llmtune.evaluate.prompt_rows import PromptRow
from llmtune.evaluate.templates import compile_templates


pytestmark = pytest.mark.usefixtures("one_thread")


def _row(text: str, answer: str, i: int) -> PromptRow:
    return PromptRow(key=text, fields={"text": text}, answer=answer, where=f"pool row {i}", label=0)


def _tok():
    from llmtune.models.builtin import load_tiny_tokenizer

    return load_tiny_tokenizer()


def _style(template="Q: {{ text }}\nA:", nearest_last=False):
    return icl.PromptStyle(compile_templates([template])[0], "\n\n", " ", nearest_last)


def test_random_demos_are_k_distinct_pool_rows_never_the_query():
    texts = [f"sentence number {i}" for i in range(12)]
    # The pool holds every query text, some twice: dedupe keeps k distinct demos.
    pool = icl.dedupe_pool([_row(t, f"ans{i % 12}", i) for i, t in enumerate(texts + texts[:5])])
    assert len(pool) == 12
    queries = [_row(t, "x", i) for i, t in enumerate(texts)]
    k = 4
    ranked = icl.select_random(queries, pool, k, seed=3)
    prompts = icl.build_prompts(queries, pool, ranked, _style(), _tok(), budget=10_000)
    for q, p in zip(queries, prompts):
        assert len(p.demos) == k and len(set(p.demos)) == k
        assert all(pool[j].key != q.key for j in p.demos)
        # The text holds exactly k demonstrations (k separators), then the query.
        assert p.text.count("\n\n") == k
        assert p.text.endswith(f"Q: {q.key}\nA:")
        assert p.text.count(f"Q: {q.key}\n") == 1
        for j in p.demos:
            assert f"Q: {pool[j].key}\nA: {pool[j].answer}" in p.text
    # Seeded: the same draw again, a different seed draws differently.
    assert icl.select_random(queries, pool, k, seed=3) == ranked
    assert icl.select_random(queries, pool, k, seed=4) != ranked


def test_pool_too_small_for_k_is_a_user_error():
    from llmtune.errors import UserError

    pool = [_row(f"t{i}", "a", i) for i in range(3)]
    with pytest.raises(UserError, match="only 3 distinct rows"):
        icl.select_random(pool, pool, 3, seed=0)


def test_over_long_prompts_drop_the_lowest_ranked_demos_first():
    tok = _tok()
    pool = [_row(f"demonstration text {i} " + "word " * 10, "yes", i) for i in range(10)]
    queries = [_row("the query itself", "x", 0)]
    ranked = [[5, 2, 7, 1]]
    full = icl.build_prompts(queries, pool, ranked, _style(), tok, budget=10_000)[0]
    assert full.dropped == 0 and len(full.demos) == 4
    budget = len(full.ids) - 5  # one demonstration too many
    short = icl.build_prompts(queries, pool, ranked, _style(), tok, budget=budget)[0]
    assert len(short.ids) <= budget
    assert short.demos == [5, 2, 7] and short.dropped == 1 and not short.cut
    # Nearest-first ranking is laid out nearest-last, and still drops the farthest.
    near = icl.build_prompts(queries, pool, ranked, _style(nearest_last=True), tok, budget=budget)[0]
    assert near.demos == [7, 2, 5]
    assert near.text.endswith("Q: the query itself\nA:")
    # A query alone over the budget keeps its end (the answer cue).
    tiny = icl.build_prompts(queries, pool, ranked, _style(), tok, budget=4)[0]
    assert tiny.cut and tiny.demos == [] and tiny.dropped == 4 and len(tiny.ids) == 4
    assert tiny.ids == tok("Q: the query itself\nA:", add_special_tokens=False)["input_ids"][-4:]


@pytest.mark.slow
def test_nearest_selection_picks_the_topical_neighbours(monkeypatch):
    import torch

    from llmtune.models import text_embeddings

    topics = {
        "cats": ["The cat curled up and purred on the sofa.", "My kitten chases a ball of yarn all day."],
        "football": ["The striker scored a goal in the final minute.", "The football team won the league title."],
        "cooking": ["Simmer the tomato sauce with garlic and basil.", "Knead the bread dough and let it rise."],
        "finance": ["The central bank raised interest rates again.", "Stock markets fell after the earnings report."],
    }
    pool = [_row(t, topic, i) for i, (topic, ts) in enumerate(topics.items()) for t in ts]
    queries = [_row("A fluffy cat napped in the sun by the window.", "cats", 0),
               _row("The goalkeeper saved a penalty in the match.", "football", 1),
               _row("Bake the cake in a hot oven for forty minutes.", "cooking", 2),
               _row("Investors sold shares as bond yields rose.", "finance", 3),
               _row("The striker scored a goal in the final minute.", "football", 4)]  # in the pool
    kw = {"batch_size": 3, "max_length": 64}
    texts = [[p.key for p in pool], [q.key for q in queries]]
    pv, qv = text_embeddings.cached_text_embeddings("minilm", texts, **kw)
    assert torch.allclose(pv.norm(dim=1), torch.ones(len(pool)), atol=1e-5)
    # Batched and sorted by length, yet each row is its text's own embedding.
    alone = text_embeddings.load_text_encoder("minilm", batch_size=1, max_length=64).embed([pool[5].key])
    assert torch.allclose(torch.from_numpy(alone[0]), pv[5], atol=1e-5)
    # A second evaluation reads the embeddings from the cache and loads no encoder.
    monkeypatch.setattr(text_embeddings, "load_text_encoder", lambda *a, **k: pytest.fail("re-embedded"))
    pv2, qv2 = text_embeddings.cached_text_embeddings("minilm", texts, **kw)
    assert torch.equal(pv, pv2) and torch.equal(qv, qv2)
    ranked = icl.select_nearest(qv, pv, queries, pool, k=2)
    for q, r in zip(queries[:4], ranked[:4]):
        assert {pool[j].answer for j in r} == {q.answer}, (q.key, [pool[j].key for j in r])
    # The query that is itself in the pool gets its topical neighbour, never itself.
    assert queries[4].key not in [pool[j].key for j in ranked[4]]
    assert pool[ranked[4][0]].key == "The football team won the league title."


def _causal(seed=0):
    from llmtune.models.builtin import build_tiny

    model = build_tiny("tiny-llama", "causal_lm", seed=seed)
    return model.eval()


def test_batched_label_scores_equal_one_sequence_at_a_time():
    """Left padding, position ids and the shared-row shortcut change nothing."""
    import torch

    from llmtune.evaluate.label_scoring import _rows, continuations, score_labels

    tok, model = _tok(), _causal()
    queries = [_row(t, "x", i) for i, t in enumerate(["short", "a much longer query text than the first one",
                                                       "middle length query"])]
    prompts = icl.build_prompts(queries, [], [[], [], []], _style(), tok, budget=1000)
    # One-token words share one row per prompt; longer words get a row per label.
    for words, rows_per_prompt in ((["good", "the", "and"], 1), (["very positive indeed", "bad"], 2)):
        pairs = continuations(tok, prompts, words, " ", [])
        assert len(_rows(pairs)[0]) == rows_per_prompt * len(prompts)
        got = score_labels(model, pairs, pad_id=tok.pad_token_id, batch_size=4, reduce="sum",
                           device=torch.device("cpu"))
        for i, per_label in enumerate(pairs):
            for li, (ctx, cont) in enumerate(per_label):
                ids = torch.tensor([list(ctx) + list(cont)])
                with torch.no_grad():
                    logp = torch.log_softmax(model(ids).logits[0].float(), -1)
                want = sum(logp[len(ctx) - 1 + t, c].item() for t, c in enumerate(cont))
                assert got[i, li].item() == pytest.approx(want, abs=1e-4)
        mean = score_labels(model, pairs, pad_id=tok.pad_token_id, batch_size=2, reduce="mean",
                            device=torch.device("cpu"))
        lengths = torch.tensor([[len(c) for _, c in per] for per in pairs], dtype=torch.float64)
        assert torch.allclose(mean, got / lengths, atol=1e-5)


def test_batched_greedy_generation_equals_one_prompt_at_a_time():
    import torch

    from llmtune.evaluate.generation import generate_texts
    from llmtune.recipe.eval_section import GenerationOptions

    tok, model = _tok(), _causal()
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in
               ["### Instruction:\nName a colour.\n\n### Response:\n", "Hi", "a b c d e f g h i j k"]]
    opts = GenerationOptions(max_new_tokens=6)
    cpu = torch.device("cpu")
    batched = generate_texts(model, tok, prompts, opts, batch_size=3, device=cpu)
    alone = [generate_texts(model, tok, [p], opts, batch_size=1, device=cpu)[0] for p in prompts]
    assert batched == alone
    assert any(batched)
    sampled = GenerationOptions(max_new_tokens=6, strategy="sample", temperature=1.5, seed=7)
    assert generate_texts(model, tok, prompts, sampled, batch_size=3, device=cpu) == \
        generate_texts(model, tok, prompts, sampled, batch_size=3, device=cpu)


def train_word_model(out_dir, word: str, steps: int = 30):
    """A tiny Llama trained to answer `word` after 'Label:', whatever the text (saved to out_dir)."""
    import torch

    from llmtune.models.builtin import build_tiny, load_tiny_tokenizer

    tok = load_tiny_tokenizer()
    model = build_tiny("tiny-llama", "causal_lm")
    vocab = "apple river stone cloud paper music garden window yellow quiet".split()
    rng = random.Random(0)
    texts = [f"Text: {' '.join(rng.sample(vocab, 3))}\nLabel: {word}" for _ in range(32)]
    enc = tok(texts, padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        model(**enc, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


@pytest.mark.slow
@pytest.mark.parametrize("word", ["blue", "red"])
def test_label_scoring_picks_the_word_the_model_was_trained_to_say(tmp_path, cli, write_recipe, word):
    model_dir = train_word_model(tmp_path / "model", word)
    rows = [{"text": t, "label": lab} for t, lab in
            [("music garden stone", "a"), ("never seen words here", "b"), ("cloud paper", "a"),
             ("quiet yellow window", "b"), ("river", "a"), ("apple stone music", "b")]]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = write_recipe({
        "model": {"name": str(model_dir)},
        "data": {"task": "classification", "train": "rows.jsonl", "eval": "rows.jsonl", "labels": ["a", "b"]},
        "method": {"name": "in-context"},
        "eval": {"shots": 0, "verbalizers": {"a": "red", "b": "blue"}, "templates": ["Text: {{ text }}\nLabel:"]},
    })
    res = cli("eval", recipe, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    chosen = {"red": 0, "blue": 1}[word]
    # Every prediction lands in the trained word's column of the confusion matrix.
    assert [row[chosen] for row in out["confusion_matrix"]] == [3, 3]
    assert out["accuracy"] == 0.5
    assert out["prompting"]["verbalizers"] == {"a": "red", "b": "blue"}


def _cls_rows(path, n=12):
    rng = random.Random(1)
    vocab = "apple river stone cloud paper music garden window yellow quiet".split()
    rows = [{"sentence": " ".join(rng.sample(vocab, 4)), "label": ["neg", "pos"][i % 2]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cli_reports_shortened_prompts(tmp_path, cli, write_recipe):
    _cls_rows(tmp_path / "train.jsonl", 12)
    _cls_rows(tmp_path / "dev.jsonl", 4)
    base = {
        "model": {"name": "tiny-llama"},
        "data": {"task": "classification", "train": "train.jsonl", "eval": "dev.jsonl",
                 "columns": {"text": "sentence"}},
        "method": {"name": "in-context"},
        "eval": {"shots": 3},
    }
    roomy = cli("eval", write_recipe(base), "--json", "--set", "eval.max_length=400")
    assert roomy.code == 0, roomy.err
    out = json.loads(roomy.out)
    assert out["prompts_shortened"] == 0 and out["mean_demos"] == 3 and out["prompts"] == 4
    assert "shortened" not in roomy.err
    tight = cli("eval", write_recipe(base), "--json", "--set", "eval.max_length=40")
    assert tight.code == 0, tight.err
    out = json.loads(tight.out)
    assert out["prompts_shortened"] == 4 and out["demos_dropped"] > 0 and out["mean_demos"] < 3
    assert out["prompting"]["budget"] < 40
    assert "4 of 4 prompts were over" in tight.err


@pytest.mark.slow
def test_cli_nearest_demos_are_the_topical_neighbours(tmp_path, cli, write_recipe):
    pool = [("The cat purred on the sofa.", "pets"), ("A kitten chased the yarn.", "pets"),
            ("The striker scored a late goal.", "sport"), ("The team won the league.", "sport")]
    queries = [("My cat sleeps all day.", "pets"), ("The goalkeeper saved a penalty.", "sport")]
    for name, rows in (("pool.jsonl", pool), ("dev.jsonl", queries)):
        (tmp_path / name).write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    recipe = write_recipe({
        "model": {"name": "tiny-llama"},
        "data": {"task": "classification", "train": "pool.jsonl", "eval": "dev.jsonl"},
        "method": {"name": "in-context"},
        "eval": {"shots": 1, "selection": "nearest", "templates": ["{{ text }} Topic:"]},
    })
    res = cli("eval", recipe, "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["prompting"]["selection"] == "nearest" and out["prompting"]["pool"] == 4
    cat, goal = (s["prompt"] for s in out["samples"])
    assert cat.startswith(("The cat purred on the sofa. Topic: pets", "A kitten chased the yarn. Topic: pets"))
    assert goal.startswith(("The striker scored a late goal. Topic: sport", "The team won the league. Topic: sport"))
    assert cat.endswith("My cat sleeps all day. Topic:") and out["samples"][0]["demos"] == 1
