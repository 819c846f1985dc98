"""Streaming MEDLINE/PubMed XML parsing (private helper of :mod:`subsetlm.corpus.sources`).

Only the standard library is used: ``xml.etree.ElementTree.iterparse`` over a gzip
stream, clearing every finished ``<PubmedArticle>`` so memory stays flat however
large the file is.

Example
-------
>>> import io
>>> xml = b'''<PubmedArticleSet><PubmedArticle><MedlineCitation><PMID>7</PMID>
... <Article><Journal><JournalIssue><PubDate><Year>2001</Year></PubDate></JournalIssue>
... <Title>J</Title></Journal><ArticleTitle>T.</ArticleTitle><Abstract>
... <AbstractText Label="AIM">A <i>b</i>.</AbstractText></Abstract>
... <PublicationTypeList><PublicationType>Journal Article</PublicationType>
... </PublicationTypeList></Article></MedlineCitation></PubmedArticle></PubmedArticleSet>'''
>>> [(k, r["text"]) for k, r in iter_medline(io.BytesIO(xml))]
[('record', 'T.\\n\\nAIM: A b.')]
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import IO, Any, Iterator

_YEAR = re.compile(r"(1[89]|20)\d\d")


def _text(elem: ET.Element | None) -> str:
    """All text inside ``elem`` (inline markup such as <i>, <sup> flattened), stripped."""
    if elem is None:
        return ""
    return "".join(elem.itertext()).strip()


def _year(article: ET.Element) -> int | None:
    pub = article.find("Journal/JournalIssue/PubDate")
    if pub is None:
        return None
    y = pub.findtext("Year")
    if y and y.strip().isdigit():
        return int(y.strip())
    m = _YEAR.search(pub.findtext("MedlineDate") or "")
    return int(m.group(0)) if m else None


def parse_article(elem: ET.Element) -> dict[str, Any] | None:
    """One ``<PubmedArticle>`` -> record dict, or ``None`` when it has no abstract."""
    cit = elem.find("MedlineCitation")
    if cit is None:
        return None
    pmid = (cit.findtext("PMID") or "").strip()
    article = cit.find("Article")
    if not pmid or article is None:
        return None
    sections = []
    for at in article.findall("Abstract/AbstractText"):
        body = _text(at)
        if not body:
            continue
        label = (at.get("Label") or "").strip()
        sections.append(f"{label}: {body}" if label else body)
    abstract = "\n".join(sections)
    if not abstract:
        return None
    title = _text(article.find("ArticleTitle"))
    return {
        "id": pmid,
        "text": f"{title}\n\n{abstract}" if title else abstract,
        "title": title,
        "abstract": abstract,
        "journal": _text(article.find("Journal/Title")),
        "year": _year(article),
        "publication_types": [_text(p) for p in article.findall("PublicationTypeList/PublicationType")],
        "mesh_terms": [_text(d) for d in cit.findall("MeshHeadingList/MeshHeading/DescriptorName")],
    }


_START = re.compile(rb"<(PubmedArticle|DeleteCitation)[\s>]")


def _elements(fh: IO[bytes], chunk: int = 1 << 20) -> Iterator[ET.Element]:
    """Top-level ``<PubmedArticle>`` / ``<DeleteCitation>`` elements, parsed one at a time.

    The byte stream is cut at the element tags (a closing tag cannot occur inside XML
    text, where ``<`` is escaped, and these elements do not nest) and each slice goes
    to the C parser in one call: several times faster than ``iterparse``, which pays a
    Python step for every element event.
    """
    buf, pos, eof = b"", 0, False
    while True:
        m = _START.search(buf, pos)
        if m is not None:
            close = b"</" + m.group(1) + b">"
            j = buf.find(close, m.end())
            if j >= 0:
                end = j + len(close)
                yield ET.fromstring(buf[m.start():end])
                pos = end
                continue
        if eof:
            return
        # keep an unfinished element, or a tail that may hold the start of a tag
        keep = m.start() if m is not None else max(pos, len(buf) - 20)
        data = fh.read(chunk)
        buf, pos, eof = buf[keep:] + data, 0, not data


def iter_medline(fh: IO[bytes]) -> Iterator[tuple[str, Any]]:
    """Stream a MEDLINE XML file.

    Yields ``("record", dict)`` for each citation with an abstract, ``("skipped", pmid)``
    for citations without one, and ``("deleted", pmid)`` for each PMID listed in a
    ``<DeleteCitation>`` block (update files retract earlier citations this way).
    Memory holds one citation at a time.
    """
    for elem in _elements(fh):
        if elem.tag == "PubmedArticle":
            rec = parse_article(elem)
            if rec is not None:
                yield "record", rec
            else:
                yield "skipped", (elem.findtext("MedlineCitation/PMID") or "").strip()
        else:
            for p in elem.findall("PMID"):
                yield "deleted", (p.text or "").strip()
