"""``extract``: fill a JSON schema from ``Label: value`` lines, two-column tables, sections,
lists and tables of objects, with the page each value was found on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._readers import Block, Page
from ._common import Job, source_pages
from ._matching import THRESHOLD, Target, split_pair, words
from ._schema import SchemaResolver, coerce, items_schema, load_schema, schema_type

__all__ = ["extract"]


@dataclass(frozen=True)
class _Pair:
    label: frozenset[str]
    value: str
    page: int
    order: int


@dataclass
class _Section:
    heading: str
    tokens: frozenset[str]
    level: int
    start: int  # order of the heading block
    end: int  # order after the last block of the section
    pages: list[int] = field(default_factory=list)


@dataclass
class _Context:
    blocks: list[tuple[int, Block]]  # (page, block) in reading order
    pairs: list[_Pair]
    sections: list[_Section]

    def in_section(self, section: _Section) -> list[tuple[int, int, Block]]:
        return [
            (n, page, block)
            for n, (page, block) in enumerate(self.blocks)
            if section.start < n < section.end
        ]


def _context(pages: Sequence[Page]) -> _Context:
    blocks = [(page.index, block) for page in pages for block in page.blocks]
    pairs: list[_Pair] = []
    for order, (page, block) in enumerate(blocks):
        if block.type in ("Text", "ListItem"):
            for line in block.text.split("\n"):
                pair = split_pair(line)
                if pair and pair[1]:
                    pairs.append(_Pair(words(pair[0]), pair[1], page, order))
        elif block.type == "Table":
            for row in block.rows:
                cells = [c for c in row if c.strip()]
                if len(row) == 2 and len(cells) == 2 and any(ch.isalpha() for ch in row[0]):
                    pairs.append(_Pair(words(row[0].rstrip(":")), row[1], page, order))
    sections: list[_Section] = []
    for order, (_page, block) in enumerate(blocks):
        if block.type != "SectionHeader":
            continue
        end = len(blocks)
        for later in range(order + 1, len(blocks)):
            other = blocks[later][1]
            if other.type == "SectionHeader" and other.level <= block.level:
                end = later
                break
        pages_in = sorted({blocks[n][0] for n in range(order, end)})
        sections.append(_Section(block.text, words(block.text), block.level, order, end, pages_in))
    return _Context(blocks, pairs, sections)


class _Extractor:
    def __init__(self, schema: Mapping[str, Any], context: _Context) -> None:
        self.resolver = SchemaResolver(schema)
        self.root = self.resolver.resolve(schema)
        self.context = context
        self.citations: dict[str, int] = {}
        self.missing: list[str] = []

    def run(self) -> dict[str, Any]:
        return self.fill(self.root, self.context.pairs, "")

    def fill(
        self, schema: Mapping[str, Any], pairs: Sequence[_Pair], prefix: str
    ) -> dict[str, Any]:
        props = {
            str(k): self.resolver.resolve(v) for k, v in (schema.get("properties") or {}).items()
        }
        found: dict[str, Any] = {}
        scalars = {n: s for n, s in props.items() if schema_type(s) not in ("object", "array")}
        targets = {n: Target.of(n, s) for n, s in props.items()}
        candidates = []
        for ti, (name, sub) in enumerate(scalars.items()):
            for pair in pairs:
                score = targets[name].score(pair.label)
                if score >= THRESHOLD:
                    candidates.append((-score, pair.order, ti, name, pair, sub))
        candidates.sort(key=lambda c: (c[0], c[1], c[2]))
        used: set[int] = set()
        for _s, _o, _t, name, pair, sub in candidates:
            if name in found or id(pair) in used:
                continue
            value = coerce(pair.value, sub)
            if value is None:
                continue
            found[name] = value
            used.add(id(pair))
            self.citations[prefix + name] = pair.page
        for name, sub in props.items():
            kind = schema_type(sub)
            if kind == "object":
                value = self.fill_object(name, sub, targets[name], pairs, prefix)
                if value:
                    found[name] = value
            elif kind == "array":
                array = self.fill_array(name, sub, targets[name], pairs, prefix)
                if array:
                    found[name] = array
        ordered = {name: found[name] for name in props if name in found}
        for name in props:
            if name not in found:
                self.missing.append(prefix + name)
        return ordered

    def matching_sections(self, target: Target) -> list[tuple[float, _Section]]:
        scored = [(target.score(s.tokens), s) for s in self.context.sections]
        return sorted(
            ((score, s) for score, s in scored if score >= THRESHOLD),
            key=lambda item: (-item[0], item[1].start),
        )

    def fill_object(
        self,
        name: str,
        schema: Mapping[str, Any],
        target: Target,
        pairs: Sequence[_Pair],
        prefix: str,
    ) -> dict[str, Any]:
        scoped: list[_Pair] = []
        for _score, section in self.matching_sections(target)[:1]:
            scoped += [p for p in pairs if section.start < p.order < section.end]
        for pair in pairs:
            if target.names and target.names < pair.label:
                scoped.append(_Pair(pair.label - target.names, pair.value, pair.page, pair.order))
            elif target.names and target.names == pair.label:
                # "Customer: Northwind" fills customer.name
                scoped.append(_Pair(frozenset({"name"}), pair.value, pair.page, pair.order))
        scoped.sort(key=lambda p: p.order)
        missing_before = len(self.missing)
        value = self.fill(schema, scoped, f"{prefix}{name}.")
        if not value:
            del self.missing[missing_before:]
        return value

    def fill_array(
        self,
        name: str,
        schema: Mapping[str, Any],
        target: Target,
        pairs: Sequence[_Pair],
        prefix: str,
    ) -> list[Any]:
        items = self.resolver.resolve(items_schema(schema))
        sections = self.matching_sections(target)
        if schema_type(items) == "object":
            return self.table_objects(name, items, sections, prefix)
        best_pair = None
        best_score = 0.0
        for pair in pairs:
            score = target.score(pair.label)
            if score >= THRESHOLD and score > best_score and coerce(pair.value, schema) is not None:
                best_pair, best_score = pair, score
        for score, section in sections:
            if best_pair is not None and best_score > score:
                break
            values = self.section_values(section, items)
            if values:
                self.citations[prefix + name] = section.pages[0] if section.pages else 0
                return values
        if best_pair is not None:
            self.citations[prefix + name] = best_pair.page
            result = coerce(best_pair.value, schema)
            return list(result) if isinstance(result, list) else []
        return []

    def section_values(self, section: _Section, items: Mapping[str, Any]) -> list[Any]:
        blocks = self.context.in_section(section)
        texts = [b.text for _n, _p, b in blocks if b.type == "ListItem"]
        if not texts:
            for _n, _p, b in blocks:
                if b.type == "Table" and len(b.rows) > 1:
                    texts = [row[0] for row in b.rows[1:] if row]
                    break
        if not texts:
            texts = [
                line for _n, _p, b in blocks if b.type == "Text" for line in b.text.split("\n")
            ]
        typed = [coerce(t, items) for t in texts]
        return [t for t in typed if t is not None]

    def table_objects(
        self,
        name: str,
        items: Mapping[str, Any],
        sections: Sequence[tuple[float, _Section]],
        prefix: str,
    ) -> list[dict[str, Any]]:
        props = {
            str(k): self.resolver.resolve(v) for k, v in (items.get("properties") or {}).items()
        }
        if not props:
            return []
        in_sections = {n for _s, sec in sections[:1] for n, _p, _b in self.context.in_section(sec)}
        best: tuple[tuple[int, int, int], int, Block, dict[int, str]] | None = None
        for order, (page, block) in enumerate(self.context.blocks):
            if block.type != "Table" or len(block.rows) < 2:
                continue
            mapping = self.map_columns(block.rows[0], props)
            matched = order in in_sections
            if not mapping or (not matched and len(mapping) * 2 < len(props)):
                continue
            rank = (0 if matched else 1, -len(mapping), order)
            if best is None or rank < best[0]:
                best = (rank, page, block, mapping)
        if best is None:
            return []
        _rank, page, block, mapping = best
        rows = []
        for row in block.rows[1:]:
            item: dict[str, Any] = {}
            for column, prop in sorted(mapping.items()):
                if column < len(row):
                    value = coerce(row[column], props[prop])
                    if value is not None:
                        item[prop] = value
            if item:
                rows.append({p: item[p] for p in props if p in item})
        if rows:
            self.citations[prefix + name] = page
        return rows

    def map_columns(
        self, header: Sequence[str], props: Mapping[str, Mapping[str, Any]]
    ) -> dict[int, str]:
        candidates = []
        for pi, (prop, sub) in enumerate(props.items()):
            target = Target.of(prop, sub)
            for column, cell in enumerate(header):
                score = target.score(words(cell))
                if score >= THRESHOLD:
                    candidates.append((-score, column, pi, prop))
        candidates.sort()
        mapping: dict[int, str] = {}
        for _s, column, _pi, prop in candidates:
            if column not in mapping and prop not in mapping.values():
                mapping[column] = prop
        return mapping


def extract(job: Job) -> dict[str, Any]:
    """The ``extract`` step: the schema filled, with citations and missing fields."""
    schema = load_schema(job.settings)
    source = source_pages(job)
    extractor = _Extractor(schema, _context(source.pages))
    extraction = extractor.run()
    return {
        "extraction": extraction,
        "extraction_schema": schema,
        "citations": extractor.citations,
        "missing_fields": extractor.missing,
        "page_count": source.page_count,
        "pages_processed": source.processed,
    }
