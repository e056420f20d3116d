"""PPTX (PresentationML): one page per slide with its title, body bullets, text boxes, tables
and pictures' alt text; dates, footers and slide numbers are skipped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from ._model import Block, DocumentError, SourceDocument, table_block
from ._office import A, P, R, core_title, main_part, open_zip, part_xml, relationships

__all__ = ["load_pptx"]


def load_pptx(data: bytes) -> SourceDocument:
    """A PPTX file: one page per slide, in the presentation's order; slides read on demand."""
    what = "PPTX"
    with open_zip(data, what) as archive:
        main = main_part(archive, "ppt/presentation.xml", what)
        root = part_xml(archive, main, what)
        if root is None:
            raise DocumentError("not a valid PPTX file (ppt/presentation.xml is missing)")
        targets = {rid: target for rid, _t, target in relationships(archive, main, what)}
        slide_paths = []
        id_list = root.find(f"{P}sldIdLst")
        if id_list is not None:
            for sld in id_list.findall(f"{P}sldId"):
                target = targets.get(sld.get(f"{R}id", ""))
                if target is not None:
                    slide_paths.append(target)
        else:
            found = [n for n in archive.namelist() if re.fullmatch(r"ppt/slides/slide\d+\.xml", n)]
            slide_paths = sorted(found, key=lambda n: int(re.sub(r"\D", "", n)))
        title = core_title(archive, what)

    def slide_blocks(index: int) -> list[Block]:
        with open_zip(data, what) as archive:
            slide = part_xml(archive, slide_paths[index], what)
        if slide is None:
            raise DocumentError(f"PPTX slide {index} ({slide_paths[index]}) is missing")
        tree = slide.find(f"{P}cSld/{P}spTree")
        if tree is None:
            return []
        titles: list[Block] = []
        others: list[Block] = []
        _pptx_shapes(tree, titles, others)
        return titles + others

    return SourceDocument("pptx", len(slide_paths), slide_blocks, title=title)


def _a_text(paragraph: ET.Element) -> str:
    parts = []
    for el in paragraph:
        if el.tag in (f"{A}r", f"{A}fld"):
            t = el.find(f"{A}t")
            parts.append(t.text or "" if t is not None else "")
        elif el.tag == f"{A}br":
            parts.append("\n")
    return "".join(parts).strip()


def _pptx_shapes(tree: ET.Element, titles: list[Block], others: list[Block]) -> None:
    for shape in tree:
        if shape.tag == f"{P}grpSp":
            _pptx_shapes(shape, titles, others)
        elif shape.tag == f"{P}sp":
            ph = shape.find(f"{P}nvSpPr/{P}nvPr/{P}ph")
            ph_type = None if ph is None else ph.get("type", "body")
            if ph_type in ("dt", "ftr", "sldNum", "hdr"):
                continue
            body = shape.find(f"{P}txBody")
            if body is None:
                continue
            paragraphs = [(p, _a_text(p)) for p in body.findall(f"{A}p")]
            if ph_type in ("title", "ctrTitle"):
                text = " ".join(t.replace("\n", " ") for _, t in paragraphs if t)
                if text:
                    titles.append(Block("SectionHeader", text, 1))
            elif ph_type in ("body", "obj"):
                for p, text in paragraphs:
                    if text:
                        bullet_off = p.find(f"{A}pPr/{A}buNone") is not None
                        others.append(Block("Text" if bullet_off else "ListItem", text))
            else:
                text = "\n".join(t for _, t in paragraphs if t)
                if text:
                    others.append(Block("Text", text))
        elif shape.tag == f"{P}graphicFrame":
            table = shape.find(f".//{A}tbl")
            if table is None:
                continue
            rows = []
            for tr in table.findall(f"{A}tr"):
                cells = tuple(
                    " ".join(_a_text(p).replace("\n", " ") for p in tc.iter(f"{A}p")).strip()
                    for tc in tr.findall(f"{A}tc")
                )
                if any(cells):
                    rows.append(cells)
            if rows:
                others.append(table_block(rows))
        elif shape.tag == f"{P}pic":
            props = shape.find(f"{P}nvPicPr/{P}cNvPr")
            alt = (props.get("descr", "") if props is not None else "").strip()
            if alt:
                others.append(Block("Picture", alt))
