"""The MUST requirements of ``docs/spec.md``, read from the document itself.

Every MUST carries an id ``[M-s-n]`` (spec 1.3, 11). :func:`requirements` returns them in
document order with their section number, the section's title and the sentence(s) that
state them, so a failing test and the report can quote the spec instead of paraphrasing it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SPEC = Path(__file__).resolve().parents[3] / "docs" / "spec.md"

_ID = re.compile(r"\*\*\[(M-[0-9.]+-[0-9]+)\]\*\*|\[(M-[0-9.]+-[0-9]+)\]")
_HEADING = re.compile(r"^(#{2,3}) ([0-9]+(?:\.[0-9]+)?) (.+)$")


@dataclass(frozen=True)
class Requirement:
    """One MUST: ``id`` like ``M-5.3-2``, ``section`` like ``5.3``, ``title`` of that
    section, ``text`` the requirement's own words (markdown emphasis removed)."""

    id: str
    section: str
    title: str
    text: str


def section_of(req_id: str) -> str:
    """``M-5.3-2`` -> ``5.3``; ``M-9-1`` -> ``9``."""
    return req_id[2:].rsplit("-", 1)[0]


def _clean(text: str) -> str:
    text = re.sub(r"\*\*\[M-[0-9.]+-[0-9]+\]\*\*\s*", "", text)
    text = text.replace("**", "").replace("`", "")
    return re.sub(r"\s+", " ", text).strip()


@cache
def requirements(path: Path = SPEC) -> dict[str, Requirement]:
    """Every ``[M-s-n]`` of the spec, in document order. Empty when the document is not
    there (an installed copy of the tools without the repository)."""
    if not path.exists():
        return {}
    out: dict[str, Requirement] = {}
    titles: dict[str, str] = {}
    # Paragraphs (blank-line separated; list items and table rows are paragraphs too),
    # each with the section it is in.
    para: list[str] = []
    current = ""
    paras: list[tuple[str, str]] = []

    def flush() -> None:
        if para:
            paras.append((current, " ".join(para)))
            para.clear()

    for line in path.read_text(encoding="utf-8").splitlines():
        m = _HEADING.match(line)
        if m:
            flush()
            current = m.group(2)
            titles[current] = m.group(3).strip()
            continue
        if not line.strip() or line.lstrip().startswith(("- ", "|", "1. ", "2. ", "3. ", "4. ", "5. ")):
            flush()
        if line.strip():
            para.append(line.strip())
    flush()
    for n, (sec, text) in enumerate(paras):
        hits = list(_ID.finditer(text))
        for i, h in enumerate(hits):
            rid = h.group(1) or h.group(2)
            if rid in out:
                continue
            end = hits[i + 1].start() if i + 1 < len(hits) else len(text)
            body = text[h.end():end]
            # A requirement written after its id up to the next id; a table row
            # ("| floor | ... | [M-2.3-2] MUST NOT ...") keeps the row's own words.
            body = _clean(body).strip("| ")
            if text.startswith("|"):
                cells = [_clean(c) for c in text[:h.start()].strip("| ").split("|")]
                body = f"{cells[0]} ({cells[1]}): {body}" if len(cells) > 1 else body
            if body.endswith(":"):
                # "An accessory MUST:" followed by its list (or table) of cases
                items = []
                for _, nxt in paras[n + 1:n + 12]:
                    if not nxt.lstrip().startswith(("|", "- ", "1. ", "2. ", "3. ", "4. ", "5. ")) \
                            or _ID.search(nxt):
                        break
                    if not set(nxt) <= set("|- "):
                        items.append(_clean(nxt).strip("| ;"))
                body = body + " " + "; ".join(items)
            s = section_of(rid)
            out[rid] = Requirement(rid, s, titles.get(s, ""), body)
    return out
