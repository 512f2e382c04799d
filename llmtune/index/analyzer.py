"""Text -> the terms BM25 counts: words, lower-cased, stop words dropped, stemmed.

llmtune analyses text itself instead of leaving it to Milvus's BM25 function: Milvus Lite's
analyzer has no stemmer (only `\\w+` words, lower-cased), and an analyzer that runs in llmtune
makes the same terms in every mode (embedded, served, a Milvus cluster). A store records its
analyzer (`StoreSettings.analyzer`); queries are analysed with the store's.

- words: `\\w+` runs (Unicode letters, digits, underscore), lower-cased;
- stop words: for English, the function words below (BM25's idf already weighs common words
  down; dropping them keeps them out of the term statistics and the length count);
- stemming: the Snowball stemmer of the language (`snowballstemmer`, which uses the faster
  PyStemmer build of the same algorithms when it is installed), so "flows", "flowing" and
  "flow" are one term. `language: none` keeps plain lower-cased words.

A term becomes a dimension of the chunk's sparse vector through a 32-bit hash (BLAKE2b); two
terms that share a dimension (about one pair in a 100,000-word vocabulary) count as one term.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from functools import lru_cache

from llmtune.errors import UserError

DEFAULT_LANGUAGE = "english"
NO_ANALYSIS = "none"
_WORD = re.compile(r"\w+")
_DIMS = 2**32 - 2  # Milvus sparse dimensions are uint32 below 2^32 - 1; the last one is EMPTY_DIM
EMPTY_DIM = 2**32 - 2
"""The one dimension of a chunk without terms (Milvus refuses an empty sparse vector); no query
has it, and the statistics do not count it."""

ENGLISH_STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves
""".split())
STOP_WORDS = {"english": ENGLISH_STOP_WORDS, "porter": ENGLISH_STOP_WORDS}


def languages() -> list[str]:
    import snowballstemmer

    return sorted(snowballstemmer.algorithms())


def analyzer_settings(language: str | None) -> dict:
    """What a new store records: the language, and whether stop words are dropped."""
    lang = (language or DEFAULT_LANGUAGE).strip().lower()
    if lang != NO_ANALYSIS:
        try:
            known = languages()
        except ImportError:
            raise UserError("BM25 stemming needs snowballstemmer: pip install 'llmtune[index]'") from None
        if lang not in known:
            raise UserError(f"--language {language!r}: choose one of {', '.join(known)}, or none (no stemming, no "
                            f"stop words)")
    return {"language": lang, "stop_words": lang in STOP_WORDS, "words": r"\w+ lower-cased"}


class Analyzer:
    def __init__(self, settings: dict):
        self.language = settings["language"]
        self.stop_words = STOP_WORDS.get(self.language, frozenset()) if settings.get("stop_words") else frozenset()
        self._stem = _stemmer(self.language)

    def terms(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        return [self._stem(w) for w in words if w not in self.stop_words]

    def counts(self, text: str) -> Counter:
        """{dimension: occurrences} of the text's terms."""
        return Counter(term_dim(t) for t in self.terms(text))


@lru_cache(maxsize=None)
def term_dim(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little") % _DIMS


def _stemmer(language: str):
    if language == NO_ANALYSIS:
        return lambda word: word
    import snowballstemmer

    stem = snowballstemmer.stemmer(language).stemWord
    return lru_cache(maxsize=1 << 18)(stem)  # a corpus repeats its words: stem each once


@lru_cache(maxsize=8)
def analyzer_for(language: str, stop_words: bool) -> Analyzer:
    return Analyzer({"language": language, "stop_words": stop_words})
