"""Labels whose decision flips between two tag runs, each with the reason in words.

A flip is a label of both runs that is present in one and absent in the other, or whose positive
tags changed by more than half. A label renamed between the runs (one retired and one added that name
the same thing: ``star`` and ``stars``, ``lightning-bolt`` and ``lightning bolt``) is compared under its
new name, ``renamed from`` its old one. The reason comes from the newer run's stored decision (e.g.
"text separation 1.81 < 2 and the images show no second group") and from what changed between the
runs' classifiers: the label's synonyms or parents, the head, or a retrain.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..method.names import fold
from ..text.vocab import same_term

logger = logging.getLogger(__name__)

__all__ = ["FLIP_SHARE", "classifier_synonyms", "decision_flips", "flip_lines", "previous_tag_run", "renamed"]

FLIP_SHARE = 0.5  # positives changing by more than this share of the smaller count (of either run) is a flip:
# growing 1.5x and shrinking to 2/3 alike (measured against the older count, a fall went unreported up to half)


def _corpus_config(catalog, classifier_id: str | None) -> tuple[dict[str, Any], str]:
    """The config of the corpus a classifier learnt from (synonyms under ``vocab``, the hierarchy
    under ``parents``), and the classifier's head."""
    clf = catalog.get_classifier(classifier_id) if classifier_id else None
    if clf is None:
        return {}, "-"
    head = catalog.classifier_heads().get(classifier_id, "-")
    config = (catalog.classifier_corpus(classifier_id) or {}).get("config")
    return (dict(config) if isinstance(config, Mapping) else {}), head


def classifier_synonyms(catalog, classifier_id: str | None) -> dict[str, list[str]]:
    """Each label's synonyms as the classifier's corpus had them (empty where unknown)."""
    synonyms = _part(_corpus_config(catalog, classifier_id)[0], "synonyms")
    return {str(k): list(v or []) for k, v in synonyms.items()}


def _part(config: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    vocab = config.get("vocab") if key == "synonyms" else config
    value = vocab.get(key) if isinstance(vocab, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _children(config: Mapping[str, Any], label: str) -> set[str]:
    """The labels a corpus config puts directly under ``label``."""
    return {str(c) for c, ps in _part(config, "parents").items() if label in (ps or [])}


def _changes(label: str, old: tuple[Mapping, str], new: tuple[Mapping, str]) -> list[str]:
    """What changed for ``label`` between two classifiers, in words."""
    out = []
    if old[0] and new[0]:
        for key, words in (("synonyms", "after its synonyms changed"), ("parents", "after its parents changed")):
            if sorted(_part(old[0], key).get(label) or []) != sorted(_part(new[0], key).get(label) or []):
                out.append(words)
        before, after = _children(old[0], label), _children(new[0], label)
        if before != after:
            moved = [f"{', '.join(map(repr, sorted(x)))} {w}" for x, w in ((after - before, "put under it"),
                                                                        (before - after, "no longer under it")) if x]
            out.append("after " + " and ".join(moved))
    if old[1] != new[1]:
        out.append(f"head {old[1]} -> {new[1]}")
    return out


def _flip_reason(a: Mapping[str, Any], b: Mapping[str, Any], changes: list[str]) -> str:
    parts = []
    if a["present"] and not b["present"] and int(b["positives"]):  # a label that became a parent
        parts.append(f"positive on {b['positives']} images through its descendants (or review decisions) only, "
                     f"its own row now judged absent: {b.get('reason') or 'judged absent'}")
    elif a["present"] and not b["present"]:
        parts.append(f"now absent: {b.get('reason') or 'judged absent'}")
    elif b["present"] and not a["present"]:
        parts.append(f"now present: {b.get('reason') or 'judged present'}")
    else:
        ta, tb = a.get("threshold"), b.get("threshold")
        moved = f"threshold {ta:.3g} -> {tb:.3g}" if ta is not None and tb is not None else "threshold changed"
        parts.append(f"positives {a['positives']} -> {b['positives']} ({moved})")
    sa, sb = a.get("text_separation"), b.get("text_separation")
    if sa is not None and sb is not None and abs(sa - sb) >= 0.25:
        parts.append(f"text separation {sa:.2f} -> {sb:.2f}")
    return "; ".join(parts + changes)


def _keys(name: str) -> set[str]:
    """Rough spellings a rename is looked up under (letters and digits, case-folded; and without a
    plural ending): candidates only, :func:`~tagger.text.vocab.same_term` decides."""
    bare = re.sub(r"[\W_]+", "", fold(name))
    return {bare} | {bare[:-len(end)] for end in ("es", "s") if bare.endswith(end) and len(bare) > len(end) + 2}


def renamed(before: Iterable[str], after: Iterable[str]) -> dict[str, str]:
    """Labels of ``after`` not in ``before`` -> the one label of ``before`` not in ``after`` that names
    the same thing (a rename: ``labels retire star`` then ``labels add stars``)."""
    old, new = list(before), list(after)
    gone, added = set(old) - set(new), [n for n in new if n not in set(old)]
    index: dict[str, set[str]] = {}
    for name in gone:
        for key in _keys(name):
            index.setdefault(key, set()).add(name)
    out: dict[str, str] = {}
    for name in added:
        match = {o for key in _keys(name) for o in index.get(key, ()) if same_term(o, name)}
        if len(match) == 1 and next(iter(match)) not in out.values():
            out[name] = match.pop()
    return out


def decision_flips(catalog, a: int, b: int) -> list[dict[str, Any]]:
    """Labels of both runs ``a`` (older) and ``b`` whose decision flips, in ``b``'s label order:
    ``label, before_present, after_present, before_positives, after_positives, reason``; and labels
    ``b`` added that it judges absent (``added``: true). Runs
    without stored decisions (the standardised rule) have none."""
    rows_a = {r["label"]: r for r in catalog.run_thresholds(a)}
    rows_b = catalog.run_thresholds(b)
    if not rows_a or not rows_b:
        return []
    run_a, run_b = catalog.get_run(a), catalog.get_run(b)
    old, new = _corpus_config(catalog, run_a.classifier_id), _corpus_config(catalog, run_b.classifier_id)
    was = renamed(rows_a, [r["label"] for r in rows_b])
    out = []
    for rb in rows_b:
        ra = rows_a.get(was.get(rb["label"], rb["label"]))
        if ra is None:
            if not rb["present"]:  # a label added since, judged absent: said, not left to `runs show`
                why, nb = rb.get("reason") or "no image reaches it", int(rb["positives"])
                out.append({"label": rb["label"], "before_present": False, "after_present": False,
                            "before_positives": 0, "after_positives": nb, "added": True,
                            "reason": f"added, judged absent: {why}" if not nb else
                            f"added: positive on {nb} images through its descendants (or review decisions) "
                            f"only, its own row judged absent: {why}"})
            continue
        na, nb = int(ra["positives"]), int(rb["positives"])
        flipped = bool(ra["present"]) != bool(rb["present"]) and (na > 0 or nb > 0)
        if not (flipped or abs(nb - na) > FLIP_SHARE * max(min(na, nb), 1)):
            continue
        changes = [f"renamed from '{ra['label']}'"] if ra["label"] != rb["label"] else _changes(rb["label"], old, new)
        out.append({"label": rb["label"], "before_present": bool(ra["present"]), "after_present": bool(rb["present"]),
                    "before_positives": na, "after_positives": nb, "reason": _flip_reason(ra, rb, changes),
                    **({"renamed_from": ra["label"]} if ra["label"] != rb["label"] else {})})
    return out


def flip_lines(flips: list[Mapping[str, Any]], limit: int = 20) -> list[str]:
    """One line per flip for a summary (at most ``limit``, then a count of the rest)."""
    lines = [f"{f['label']}: {f['before_positives']} -> {f['after_positives']} positives ({f['reason']})"
             for f in flips[:limit]]
    if len(flips) > limit:
        lines.append(f"... and {len(flips) - limit} more (tagger runs diff)")
    return lines


def previous_tag_run(catalog, run_id: int) -> int | None:
    """The newest finished, unpruned tag run before ``run_id`` (what it replaced), or None."""
    done = ("loaded", "current", "superseded")
    earlier = [r.run_id for r in catalog.runs(kind="tag")
               if r.run_id < run_id and r.status in done and r.pruned_at is None]
    return earlier[-1] if earlier else None
