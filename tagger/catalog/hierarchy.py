"""Label hierarchies in the catalog: the ``label_parents`` edges (child -> parent, several parents
allowed), refused when they would close a cycle. Retiring a label leaves its edges alone: its
children stay active, and tag runs bypass it (see :func:`tagger.method.hierarchy.active_parents`)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

from ..errors import CatalogError
from ..method.hierarchy import active_parents, cycle_with
from ..text.vocab import TermInside, terms_inside
from .base import CatalogBase
from .vocab import clean_label

__all__ = ["HierarchyMixin"]

logger = logging.getLogger(__name__)


def _names(names: Sequence[str] | str, what: str) -> list[str]:
    return list(dict.fromkeys(clean_label(n, what) for n in ([names] if isinstance(names, str) else names)))


def _refuse_cycles(edges: dict[str, list[str]], new: Sequence[tuple[str, str]]) -> None:
    """CatalogError naming the cycle the first of ``new`` edges to close one would make (``edges``
    are the stored ones; each accepted new edge joins them)."""
    graph = {c: list(ps) for c, ps in edges.items()}
    for child, parent in new:
        cycle = cycle_with(graph, child, parent)
        if cycle is not None:
            what = "a label cannot be its own parent" if child == parent else \
                f"{parent!r} as a parent of {child!r} would close a cycle"
            raise CatalogError(f"label hierarchy: {what}: {' -> '.join(cycle)} (child -> parent)")
        graph.setdefault(child, []).append(parent)


class HierarchyMixin(CatalogBase):
    """Parents of labels: add, remove, list, and the hierarchy among the active labels (uses the
    label methods of :class:`~tagger.catalog.vocab.VocabMixin`, which the Catalog class also has)."""

    if TYPE_CHECKING:  # from VocabMixin, beside this one in Catalog
        def active_labels(self) -> list[str]: ...

        def add_labels(self, names: Sequence[str],
                       synonyms: Mapping[str, Sequence[str]] | Sequence[Sequence[str] | None] | None = None,
                       ) -> list[int]: ...

    def label_parents(self) -> dict[str, list[str]]:
        """Every stored edge as child -> parents (in the order they were added), retired labels included."""
        out: dict[str, list[str]] = {}
        for child, parent in self.query("SELECT child, parent FROM label_parents ORDER BY child, added_at, parent"):
            out.setdefault(child, []).append(parent)
        return out

    def terms_inside(self, names: Sequence[str]) -> list[TermInside]:
        """Where a name or synonym of the active labels ``names`` lies inside a longer one of another
        active label, or another's inside theirs (``tree`` and ``palm tree``), unless one is an
        ancestor of the other."""
        rows = self.query("SELECT name, synonyms FROM labels WHERE retired_at IS NULL ORDER BY label_id")
        terms = {n: list(s or []) for n, s in rows}
        return terms_inside(terms, [n for n in dict.fromkeys(x.strip() for x in names) if n in terms],
                            self.active_hierarchy())

    def active_hierarchy(self) -> dict[str, tuple[str, ...]]:
        """The hierarchy tag runs and text corpora use: active labels only, retired ones bypassed."""
        return active_parents(self.label_parents(), self.active_labels())

    def check_parents(self, children: Sequence[str] | str, parents: Sequence[str] | str) -> None:
        """Refuse (CatalogError, naming the cycle) parents that would close a cycle; writes nothing."""
        kids, pars = _names(children, "label"), _names(parents, "parent")
        stored = self.label_parents()
        _refuse_cycles(stored, [(c, p) for c in kids for p in pars if p not in stored.get(c, ())])

    def add_parents(self, children: Sequence[str] | str, parents: Sequence[str] | str) -> int:
        """Make each of ``parents`` a parent of each of ``children``; return the edges added.

        Children must be labels; a parent that is not one yet is added as a label (a retired one is
        linked and stays retired). An edge that would close a cycle (a label its own parent, or an
        ancestor made a child) raises CatalogError before anything is written.
        """
        kids, pars = _names(children, "label"), _names(parents, "parent")
        self.check_parents(kids, pars)
        known = {n for (n,) in self.query("SELECT name FROM labels")}
        unknown = [c for c in kids if c not in known]
        if unknown:
            raise CatalogError(f"unknown label(s) {unknown!r} (add them with `tagger labels add`)")
        missing = [p for p in pars if p not in known]
        if missing:
            self.add_labels(missing)
        active = set(self.active_labels())
        retired = [p for p in pars if p in known and p not in active]
        if retired:
            logger.warning("parent(s) %s retired: linked, but bypassed until re-added (`tagger labels add %s`)",
                           ", ".join(map(repr, retired)), retired[0])
        now, n = self._now(), 0
        with self._transaction("add parents") as con:
            stored: dict[str, list[str]] = {}
            for c, p in con.execute("SELECT child, parent FROM label_parents").fetchall():
                stored.setdefault(c, []).append(p)
            new = [(c, p) for c in kids for p in pars if p not in stored.get(c, ())]
            _refuse_cycles(stored, new)
            for c, p in new:
                con.execute("INSERT INTO label_parents (child, parent, added_at) VALUES (?, ?, ?)", [c, p, now])
                n += 1
        if n:
            logger.info("label hierarchy: %d parent link(s) added", n)
        return n

    def remove_parents(self, child: str, parents: Sequence[str] | str) -> int:
        """Unlink ``parents`` from ``child`` (the labels themselves stay); return the edges removed.
        A parent ``child`` does not have raises CatalogError and removes nothing."""
        kid, pars = clean_label(child), _names(parents, "parent")
        with self._transaction("remove parents") as con:
            have = {p for (p,) in con.execute("SELECT parent FROM label_parents WHERE child = ?", [kid]).fetchall()}
            absent = [p for p in pars if p not in have]
            if absent:
                raise CatalogError(f"label {kid!r} has no parent(s) {absent!r} (it has {sorted(have) or 'none'})")
            for p in pars:
                con.execute("DELETE FROM label_parents WHERE child = ? AND parent = ?", [kid, p])
        return len(pars)
