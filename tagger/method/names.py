"""Names: how two are compared (:func:`fold`), how one reads in a sentence or prompt (its own article,
a plural: :func:`fill`), and corroboration by names: how the images that pass a label's threshold are
named by zero-shot CLIP.

Each sample image's best zero-shot match (the label whose class prompt is closest) is counted per
label among the images over its threshold: its own name against the most frequent other one. The
anchored decision rule (:mod:`tagger.method.decisions`) keeps a label only when its own name holds
its own against that rival.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from typing import NamedTuple

import numpy as np

__all__ = ["NameCounts", "ZeroShotNames", "fill", "fold", "hierarchy_names", "name_counts", "name_words",
           "reads_plural", "starts_with_article"]


MIN_HELD = 3  # a shorter name (`c`, `ox`) is held by too many words to say anything


def fold(name: str) -> str:
    """The form two names are compared in: compatibility-normalised (full-width letters, ligatures),
    without invisible format characters (a zero-width joiner or space, a soft hyphen) and case-folded,
    so ``Star``, ``STAR``, ``ＳＴＡＲ`` and ``star`` followed by U+200D are one name."""
    text = unicodedata.normalize("NFKC", name)
    if not text.isascii():
        text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return text.casefold()


_ARTICLES = ("a ", "an ", "the ")
#: Words ending in s that are one thing (a plural-looking name otherwise gets no ``a`` and no second ``s``).
_S_SINGULARS = frozenset({"lens", "news", "series", "species", "gas", "canvas", "atlas", "bias", "chaos", "cosmos",
                          "octopus", "walrus", "chassis", "mattress", "trellis", "pancreas", "diabetes", "measles"})


def starts_with_article(name: str) -> bool:
    """A name written with its article (``a star``, ``the moon``): used as written, nothing put in front."""
    return name.casefold().startswith(_ARTICLES)


def reads_plural(name: str) -> bool:
    """A name whose last word reads as a plural (``squares``, ``palm trees``; not ``glass``, ``bus``,
    ``lens``): no ``a`` in front of it and no second plural ending (``squareses``)."""
    last = name.rsplit(" ", 1)[-1].casefold()
    return (len(last) > 3 and last.endswith("s") and not last.endswith(("ss", "us", "is", "ics", "ous"))
            and last not in _S_SINGULARS)


_ARTICLE_SLOT = re.compile(r"\b(?:a|an|the) \{\}", re.IGNORECASE)
_A_SLOT = re.compile(r"\b(?:a|an) \{\}", re.IGNORECASE)


def fill(template: str, name: str) -> str:
    """``template`` (one ``{}`` slot) with ``name`` in it, leaving out the template's article where the
    name brings its own (``a star``) and its ``a`` where the name reads plural (``squares``): no prompt
    says "a photo of a a star" or "a photo of a squares". Other names: ``template.format(name)``."""
    if starts_with_article(name):
        template = _ARTICLE_SLOT.sub("{}", template)
    elif reads_plural(name):
        template = _A_SLOT.sub("{}", template)
    return template.format(name)


def _inside(labels: list[str], label: np.ndarray, name: np.ndarray, names: list[str] | None = None) -> np.ndarray:
    """Per (label, name) pair, whether the name holds the label's name (``red circle`` and ``circle``,
    ``doorbell`` and ``bell``): a more specific name matching the images does not deny the label.
    ``label`` indexes ``labels``, ``name`` indexes ``names`` (default: the labels)."""
    names = labels if names is None else names
    a_fold = {i: fold(labels[i]) for i in set(label.tolist())}
    b_fold = {i: fold(names[i]) for i in set(name.tolist())}
    return np.array([len(a_fold[a]) >= MIN_HELD and a_fold[a] in b_fold[b]
                     for a, b in zip(label.tolist(), name.tolist())], bool)


class ZeroShotNames(NamedTuple):
    """Best zero-shot matches read in a wider name space than the labels decided (an incremental run
    decides its new labels, but the kept labels' names are their rivals too): ``top1`` indexes
    ``names`` (every label of the model), label ``j`` of the decision is ``names[own[j]]``, and
    ``keys`` (one per name; None: those given to :func:`name_counts`) are the names' corroboration
    keys (alike labels share one).

    Under a label hierarchy ``top1`` is each image's best match among the names that are no label's
    parent (a parent's name matches its children's images too), and a parent is read in ``wide``
    instead, the best match among every name: ``family`` maps such a label ``j`` to the names that
    count as its own there (its descendants' and ancestors': a circle's images named 'moon', after
    moon was put under circle, are still circle's), see :func:`hierarchy_names`."""

    top1: np.ndarray
    names: list[str]
    own: np.ndarray
    keys: list[str] | None = None
    wide: np.ndarray | None = None
    family: dict[int, frozenset[int]] | None = None


def hierarchy_names(top1: np.ndarray, wide: np.ndarray, names: list[str],
                    relatives: Mapping[str, Collection[str]]) -> ZeroShotNames:
    """The best matches of a run that decides every one of ``names`` (the model's labels) under a
    hierarchy: ``top1`` among the names that are no label's parent, ``wide`` among all of them, and
    ``relatives`` each parent's descendants and ancestors (by name)."""
    at = {n: i for i, n in enumerate(names)}
    family = {at[p]: frozenset(at[r] for r in rel if r in at) for p, rel in relatives.items() if p in at}
    return ZeroShotNames(np.asarray(top1, np.int64), list(names), np.arange(len(names)), None,
                         np.asarray(wide, np.int64), family)


class NameCounts(NamedTuple):
    """Per label, how the sample images at or over its threshold are named (float counts, indices -1 if none)."""

    images: np.ndarray  # images at or over the threshold
    own: np.ndarray  # named by the label's own name, or by a name holding it
    rival_count: np.ndarray  # named by the most frequent other name
    rival: np.ndarray  # that name's label index (its index in :class:`ZeroShotNames` ``names`` where given)
    held: np.ndarray  # of ``own``, named by a name holding the label's (``doorbell`` for ``bell``)
    holder: np.ndarray  # the most frequent of those names


def _first_per_label(label: np.ndarray, name: np.ndarray, count: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per label, its most frequent name among the pairs given: (index -1 if none, count)."""
    top, top_count = np.full(n, -1), np.zeros(n)
    order = np.lexsort((-count, label))
    lab, nam, cnt = label[order], name[order], count[order]
    first = np.r_[True, lab[1:] != lab[:-1]] if len(lab) else np.zeros(0, bool)
    top[lab[first]], top_count[lab[first]] = nam[first], cnt[first]
    return top, top_count


def _pairs(above: np.ndarray, top1: np.ndarray, N: int, space: "ZeroShotNames | None"
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (label, name) pairs over the threshold, encoded ``label * N + name``, with their counts and
    whether the name is of the label's family (:class:`ZeroShotNames`: a parent read in ``wide``)."""
    wide = None if space is None or space.wide is None else np.asarray(space.wide, np.int64)
    family = (space.family or {}) if space is not None and wide is not None else {}
    read_wide = np.zeros(above.shape[1], bool)
    read_wide[list(family)] = True
    rows, cols = np.nonzero(above & ~read_wide[None, :] & ((top1 >= 0) & (top1 < N))[:, None])
    codes = [cols * N + top1[rows]]
    if family and wide is not None:
        fam = np.flatnonzero(read_wide)
        rows, k = np.nonzero(above[:, fam] & ((wide >= 0) & (wide < N))[:, None])
        codes.append(fam[k] * N + wide[rows])
    pairs, count = np.unique(np.concatenate(codes), return_counts=True)
    kin = np.array([j * N + m for j, ms in family.items() for m in ms], np.int64)
    return pairs, count, np.isin(pairs, kin)


def name_counts(s: np.ndarray, threshold: np.ndarray, top1: "np.ndarray | ZeroShotNames | None",
                labels: list[str] | None = None, keys: list[str] | None = None) -> NameCounts | None:
    """Per label, among the sample images at or over its threshold: how many there are, how many
    have the label's own name as their best zero-shot match, and the most frequent other name
    (:class:`NameCounts`). With ``labels``, a name that holds the label's own (``doorbell`` for
    ``bell``, ``red circle`` for ``circle``) counts as the label's own, never as a rival: a bell's
    images named doorbell are still a bell's, and a word added to the vocabulary made the label it
    contains vanish. Labels of the same ``keys`` (one per label: alike labels share one,
    :mod:`tagger.method.alike`) count as each other's own too. None without zero-shot matches.
    Under a hierarchy a parent's images are read among every name, its family's counting as its own
    (:class:`ZeroShotNames`). Counted as sparse (label, name) pairs: memory grows with the images
    over thresholds, not with the labels squared."""
    if top1 is None:
        return None
    n, L = s.shape
    space = top1 if isinstance(top1, ZeroShotNames) else None
    top1 = np.asarray(space.top1 if space else top1, np.int64)
    if top1.shape != (n,):
        raise ValueError(f"zeroshot_top1 must hold one label index per sample image, got {top1.shape}")
    N = len(space.names) if space else L
    own_name = np.asarray(space.own, np.int64) if space else np.arange(L)
    above = s >= threshold[None, :]
    pairs, count, related = _pairs(above, top1, N, space)
    label, name = np.divmod(pairs, N)
    own = np.zeros(L)
    exact = own_name[label] == name
    mine = exact | related
    name_keys = space.keys if space and space.keys is not None else keys
    if name_keys is not None and (~mine).any():  # an alike label's name (disc for circle) names it too
        k = np.asarray(name_keys, object)
        mine[~mine] = k[own_name[label[~mine]]] == k[name[~mine]]
    alike = mine & ~exact
    if labels is not None and (~mine).any():  # a more specific name (doorbell) names a bell too
        mine[~mine] = _inside(labels, label[~mine], name[~mine], space.names if space else None)
    np.add.at(own, label[mine], count[mine])
    rival, rival_count = _first_per_label(label[~mine], name[~mine], count[~mine], L)
    holds = mine & ~exact & ~alike
    holder, _ = _first_per_label(label[holds], name[holds], count[holds], L)
    held = np.zeros(L)
    np.add.at(held, label[holds], count[holds])
    return NameCounts(above.sum(0).astype(np.float64), own, rival_count, rival, held, holder)


def name_words(names: NameCounts | None, labels: list[str], ratio: np.ndarray, min_ratio: float,
               space: list[str] | None = None) -> list[str] | None:
    """Per label, how its images name it, in words (None without zero-shot matches); ``space``: the
    names the rivals index (:class:`ZeroShotNames`), default the labels."""
    if names is None:
        return None
    space = space or labels

    def own(j: int) -> str:
        n, held = int(names.own[j]), int(names.held[j])
        if not held:
            return f"its name is the best match of {n} of its {int(names.images[j])} images"
        return (f"its name, or one holding it, is the best match of {n} of its {int(names.images[j])} images "
                f"({held} by a name holding it, most often '{space[names.holder[j]]}')")

    return ["no sample image reaches its threshold" if not names.images[j] else
            own(j) + ", " + (f"'{space[names.rival[j]]}' of {int(names.rival_count[j])}" if names.rival[j] >= 0
                             else "no other name of any")
            + f" ({ratio[j]:.2f} {'<' if ratio[j] < min_ratio else '>='} {min_ratio:g} times as often)"
            for j in range(len(labels))]
