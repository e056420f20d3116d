"""Matching labels in a document to names in a schema: words, key words and scores."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["THRESHOLD", "Target", "split_pair", "words"]


_STOP = frozenset(
    {"a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "in", "is", "it", "of", "on",
     "or", "that", "the", "this", "to", "with", "its", "which", "what", "document", "field",
     "value"}
)  # fmt: skip
THRESHOLD = 0.5


def _word_tokens(text: str) -> list[str]:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return re.findall(r"[a-z0-9]+", text.lower())


def _key_words(tokens: Iterable[str]) -> frozenset[str]:
    """The tokens less stop words (all of them when nothing else is left)."""
    every = list(tokens)
    kept = frozenset(t for t in every if t not in _STOP)
    return kept or frozenset(every)


def words(text: str) -> frozenset[str]:
    """The key words of ``text``: what labels, names and headings are compared by."""
    return _key_words(_word_tokens(text))


@dataclass(frozen=True)
class Target:
    """A schema property to match: the key words of its name, title and description."""

    names: frozenset[str]
    title: frozenset[str]
    description: frozenset[str]

    @classmethod
    def of(cls, name: str, schema: Mapping[str, Any]) -> Target:
        """The target for property ``name`` with sub-schema ``schema``."""
        title = schema.get("title")
        description = schema.get("description")
        return cls(
            words(name),
            words(title) if isinstance(title, str) else frozenset(),
            words(description) if isinstance(description, str) else frozenset(),
        )

    def score(self, label: frozenset[str]) -> float:
        """How well ``label`` names this target, in ``[0, 1]``."""
        if not label:
            return 0.0
        best = 0.0
        for names in (self.names, self.title):
            if not names:
                continue
            if names == label:
                return 1.0
            common = len(names & label)
            if common:
                best = max(best, common / len(names | label))
        if self.description:
            common = len(self.description & label)
            # A single shared word with a description is weak evidence on its own.
            weight = 0.75 if common >= 2 else 0.4
            best = max(best, weight * common / len(label))
        return best


_PAIR_RE = re.compile(
    r"^\s*(?:[-*\u2022]\s+)?\**\s*([^:\uff1a]{1,60}?)\s*\**\s*[:\uff1a]\s*\**\s*(.*?)\s*\**\s*$"
)


def split_pair(line: str) -> tuple[str, str] | None:
    """``(label, value)`` of a ``Label: value`` line, else None."""
    match = _PAIR_RE.match(line)
    if not match:
        return None
    label, value = match.group(1).strip(), match.group(2).strip()
    if not any(c.isalpha() for c in label) or len(label.split()) > 8 or ". " in label:
        return None
    return label, value
