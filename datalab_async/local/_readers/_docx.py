"""DOCX (WordprocessingML): headings, paragraphs, list items, tables and page breaks.

Headings come from paragraph styles named ``heading N`` / ``title`` (whatever their localized
ids) or outline levels; list items from list styles or numbering; pages split on explicit
breaks (``w:br w:type="page"``, ``pageBreakBefore``). Tracked deletions are skipped.
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

from ._model import Block, DocumentError, SourceDocument, table_block
from ._office import W, core_title, main_part, open_zip, part_xml

__all__ = ["load_docx"]


def _truthy(el: ET.Element | None) -> bool:
    return el is not None and el.get(f"{W}val", "true").lower() not in ("0", "false", "off")


def load_docx(data: bytes) -> SourceDocument:
    """A DOCX file: pages split on explicit page breaks; headings from styles or outline levels."""
    what = "DOCX"
    with open_zip(data, what) as archive:
        main = main_part(archive, "word/document.xml", what)
        root = part_xml(archive, main, what)
        if root is None:
            raise DocumentError("not a valid DOCX file (word/document.xml is missing)")
        styles_path = posixpath.join(posixpath.dirname(main), "styles.xml")
        styles = _docx_styles(part_xml(archive, styles_path, what))
        title = core_title(archive, what)
    body = root.find(f"{W}body")
    if body is None:
        raise DocumentError("not a valid DOCX file (the document has no body)")
    pages: list[list[Block]] = [[]]
    _docx_children(body, styles, pages)
    return SourceDocument("docx", len(pages), lambda i: pages[i], title=title)


def _docx_styles(root: ET.Element | None) -> dict[str, tuple[int, bool]]:
    """styleId -> (heading level or 0, is a list style)."""
    out: dict[str, tuple[int, bool]] = {}
    if root is None:
        return out
    for style in root.iter(f"{W}style"):
        sid = style.get(f"{W}styleId", "")
        name_el = style.find(f"{W}name")
        name = (name_el.get(f"{W}val", "") if name_el is not None else sid).lower()
        level = 0
        match = re.fullmatch(r"heading\s*(\d)", name)
        if name == "title":
            level = 1
        elif match:
            level = int(match.group(1))
        else:
            outline = style.find(f"{W}pPr/{W}outlineLvl")
            if outline is not None and outline.get(f"{W}val", "9").isdigit():
                lvl = int(outline.get(f"{W}val", "9"))
                level = lvl + 1 if lvl < 9 else 0
        is_list = name.startswith("list") or style.find(f"{W}pPr/{W}numPr") is not None
        out[sid] = (min(level, 6), is_list)
    return out


def _docx_children(
    parent: ET.Element, styles: dict[str, tuple[int, bool]], pages: list[list[Block]]
) -> None:
    for child in parent:
        if child.tag == f"{W}p":
            _docx_paragraph(child, styles, pages)
        elif child.tag == f"{W}tbl":
            rows = []
            for tr in child.iter(f"{W}tr"):
                cells = []
                for tc in tr.findall(f"{W}tc"):
                    texts = (
                        "".join(_docx_runs_text(p)).replace("\f", " ") for p in tc.iter(f"{W}p")
                    )
                    cells.append(" ".join(t.strip() for t in texts if t.strip()))
                if any(cells):
                    rows.append(tuple(cells))
            if rows:
                pages[-1].append(table_block(rows))
        elif child.tag == f"{W}sdt":
            content = child.find(f"{W}sdtContent")
            if content is not None:
                _docx_children(content, styles, pages)
        elif child.tag in (f"{W}customXml", f"{W}smartTag", f"{W}ins"):
            _docx_children(child, styles, pages)


def _docx_runs_text(paragraph: ET.Element) -> Iterator[str]:
    """The text of a paragraph's runs in order; ``\\f`` marks an explicit page break."""
    for run in paragraph.iter(f"{W}r"):
        for el in run:
            tag = el.tag
            if tag == f"{W}t":
                yield el.text or ""
            elif tag == f"{W}tab":
                yield "\t"
            elif tag == f"{W}br":
                kind = el.get(f"{W}type", "textWrapping")
                yield "\f" if kind == "page" else ("\n" if kind == "textWrapping" else "")
            elif tag == f"{W}cr":
                yield "\n"
            elif tag == f"{W}noBreakHyphen":
                yield "-"


def _docx_paragraph(
    p: ET.Element, styles: dict[str, tuple[int, bool]], pages: list[list[Block]]
) -> None:
    props = p.find(f"{W}pPr")
    level, is_list = 0, False
    if props is not None:
        style = props.find(f"{W}pStyle")
        if style is not None:
            level, is_list = styles.get(style.get(f"{W}val", ""), (0, False))
            if not styles:
                sid = style.get(f"{W}val", "").lower()
                match = re.fullmatch(r"heading(\d)", sid)
                level = 1 if sid == "title" else int(match.group(1)) if match else 0
                is_list = sid.startswith("list")
        outline = props.find(f"{W}outlineLvl")
        if outline is not None and outline.get(f"{W}val", "9").isdigit():
            lvl = int(outline.get(f"{W}val", "9"))
            level = lvl + 1 if lvl < 9 else level
        is_list = is_list or props.find(f"{W}numPr") is not None
        if _truthy(props.find(f"{W}pageBreakBefore")) and (pages[-1] or len(pages) > 1):
            pages.append([])
    kind = "SectionHeader" if level else ("ListItem" if is_list else "Text")
    for n, segment in enumerate("".join(_docx_runs_text(p)).split("\f")):
        if n:
            pages.append([])
        lines = [line.strip() for line in segment.split("\n")]
        text = "\n".join(line for line in lines if line)
        if text:
            pages[-1].append(Block(kind, text.replace("\n", " ") if level else text, min(level, 6)))
