"""Text corpora for text-only training: sampled label sets, their sentences and multi-hot labels.

A corpus built for a label hierarchy records it in its config (``parents``: child -> parents among
its labels), so its id changes with the hierarchy. Its stored label matrix holds the label sets the
sentences were written for; :meth:`TextCorpus.targets` adds every label's ancestors (a sentence
about a car is also about a vehicle), and training uses that. Keeping the written sets lets a
changed hierarchy reuse every sentence: only the config and the targets change.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from .. import ids
from ..atomic import atomic_open, atomic_write_text
from ..errors import ConfigError, DatasetError, IncompleteCorpusError, TextGenerationError
from ..method.hierarchy import ParentMap, expand_label_matrix, normalise_parents
from ..method.labelrows import LabelRows, as_csr, dense_blocks
from .base import GenerationStats, SentenceGenerator
from .labelsets import label_matrix, sample_label_sets
from .llm import LLMConfig, LLMGenerator
from .offline import OfflineGenerator
from .templates import PROMPT_TEMPLATES, template_sentences
from .background import apart, background_nouns
from .vocab import Vocabulary

if TYPE_CHECKING:
    from ..method.comc import ComcConfig

logger = logging.getLogger(__name__)

CORPUS_FORMAT = 1
CONFIG_FILE = "corpus.json"
SENTENCES_FILE = "sentences.parquet"
LABELS_FILE = "label_sets.npz"  # the label rows, sparse (CSR)
DENSE_LABELS_FILE = "label_matrix.npy"  # what corpora written before held instead: still read


#: Label rows up to this many cells are hashed dense (:func:`content_id`).
DENSE_HASH_CELLS = 1 << 28


def content_id(config: Mapping[str, Any], sentences: Sequence[str], sources: Sequence[str],
               matrix: LabelRows) -> str:
    """Corpus id from its config and what it holds: sentences, their sources and label rows (hashed
    as their dense uint8 bytes, a block of rows at a time: the id a dense matrix always had; above
    :data:`DENSE_HASH_CELLS` cells, as their canonical CSR arrays: 10^4 labels make gigabytes dense)."""
    h = hashlib.sha256(json.dumps([list(sentences), list(sources)], ensure_ascii=False).encode("utf-8"))
    h.update(repr(tuple(int(x) for x in matrix.shape)).encode())
    if matrix.shape[0] * matrix.shape[1] > DENSE_HASH_CELLS:
        csr = as_csr(matrix, np.uint8)
        h.update(b"csr")
        for part in (csr.indptr.astype(np.int64), csr.indices.astype(np.int64), csr.data.astype(np.uint8)):
            h.update(np.ascontiguousarray(part).tobytes())
    else:
        for block in dense_blocks(matrix, np.uint8):
            h.update(np.ascontiguousarray(block).tobytes())
    return ids.content_id({"config": config, "content": h.hexdigest()})


def corpus_parents(config: Mapping[str, Any] | None) -> dict[str, tuple[str, ...]]:
    """The label hierarchy a corpus was built for (child -> parents; empty for none)."""
    raw = config.get("parents") if isinstance(config, Mapping) else None
    return normalise_parents(raw if isinstance(raw, Mapping) else None)


def parents_config(parents: ParentMap | None, labels: Sequence[str]) -> dict[str, Any]:
    """``{"parents": ...}`` for a corpus config: the edges among ``labels`` in a stable form, or
    nothing at all without a hierarchy (so a corpus without one keeps the id it always had)."""
    known = set(labels)
    norm = normalise_parents({c: [p for p in ps if p in known] for c, ps in (parents or {}).items() if c in known})
    return {"parents": {c: list(ps) for c, ps in norm.items()}} if norm else {}


def allowed_missing(max_missing: float, n: int) -> int:
    """Label sets out of ``n`` allowed to lack a sentence: ``max_missing`` below 1 is a fraction
    of ``n`` (rounded down), 1 or more a count."""
    if not isinstance(max_missing, (int, float)) or math.isnan(max_missing) or max_missing < 0:
        raise ConfigError(f"max_missing must be a fraction in [0, 1) or a count >= 1, got {max_missing!r}")
    if max_missing < 1:
        return math.floor(max_missing * n)
    if max_missing != int(max_missing):
        raise ConfigError(f"max_missing of 1 or more is a count of label sets, got {max_missing!r}")
    return int(max_missing)


def require_complete(total: int, reasons: Mapping[str, int], max_missing: float) -> dict[str, int]:
    """The shortfall record of a generation step, or :class:`IncompleteCorpusError` beyond tolerance.

    ``reasons`` counts the label sets left without a sentence, by cause.
    """
    missing = sum(reasons.values())
    allowed = allowed_missing(max_missing, total)
    if missing > allowed:
        detail = ", ".join(f"{v} {k}" for k, v in reasons.items() if v)
        raise IncompleteCorpusError(missing, total, allowed, detail)
    shortfall = {"missing": missing, "label_sets": total}
    if missing:
        shortfall["allowed"] = allowed
        logger.warning("corpus accepted with %d of %d label sets missing (%d allowed)", missing, total, allowed)
    return shortfall


def missing_label_sets(corpus: "TextCorpus") -> int:
    """Label sets the corpus asked for and holds no sentence of (older corpora: from their stats)."""
    short = corpus.config.get("shortfall")
    if isinstance(short, Mapping):
        return int(short.get("missing", 0))
    st = corpus.stats
    if "new_label_sets" in st:
        return int(st["new_label_sets"]) - int(st.get("new_sentences", 0))
    return int(st.get("dropped", 0)) + int(st.get("rejected", 0))


@dataclass
class TextCorpus:
    """Sentences with their multi-hot label rows over ``class_names``.

    ``label_matrix`` is held as a uint8 CSR array (a dense one given is converted): at 10,000
    labels the dense form would take gigabytes. ``sources`` tells generated sentences
    (``"generated"``) from single-label templates (``"template"``); ``config`` is what the corpus
    was built from, ``stats`` the generation counters.
    """

    sentences: list[str]
    label_matrix: sp.csr_array
    class_names: tuple[str, ...]
    corpus_id: str
    sources: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sources:
            self.sources = ["generated"] * len(self.sentences)
        self.label_matrix = m = as_csr(self.label_matrix, np.uint8)
        if m.ndim != 2 or m.shape != (len(self.sentences), len(self.class_names)):
            raise DatasetError(f"label matrix shape {m.shape} does not fit "
                               f"{len(self.sentences)} sentences x {len(self.class_names)} classes")
        if len(self.sources) != len(self.sentences):
            raise DatasetError("sources and sentences differ in length")

    def __len__(self) -> int:
        return len(self.sentences)

    @property
    def background(self) -> tuple[str, ...]:
        """The background nouns among the class names (:mod:`.background`): trained, never tagged."""
        return tuple(self.config.get("background") or ())

    @property
    def labels(self) -> list[str]:
        """The class names a classifier trained on this corpus tags: all but the background nouns."""
        bg = set(self.background)
        return [c for c in self.class_names if c not in bg]

    @property
    def synonyms(self) -> dict[str, tuple[str, ...]]:
        """Each label's synonyms as the corpus was built with them (labels without any left out)."""
        given = (self.config.get("vocab") or {}).get("synonyms") or {}
        return {str(k): tuple(str(s) for s in v) for k, v in given.items() if v}

    def take(self, rows: np.ndarray) -> "TextCorpus":
        """The corpus of the sentences ``rows`` (indices, in that order), with the same id and config."""
        r = np.asarray(rows, np.int64)
        return replace(self, sentences=[self.sentences[i] for i in r], label_matrix=self.label_matrix[r],
                       sources=[self.sources[i] for i in r])

    def targets(self) -> sp.csr_array:
        """The training targets: the label matrix with each row's ancestors set too (the
        hierarchy in ``config["parents"]``); the label matrix itself without a hierarchy. Sparse."""
        parents = corpus_parents(self.config)
        return expand_label_matrix(self.label_matrix, self.class_names, parents) if parents else self.label_matrix

    def save(self, directory: str | Path) -> Path:
        """Write ``sentences.parquet``, ``label_sets.npz`` and (last) ``corpus.json``, each atomically."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        table = pa.table({"sentence": pa.array(self.sentences, pa.string()),
                          "source": pa.array(self.sources, pa.string())})
        with atomic_open(d / SENTENCES_FILE) as fh:
            pq.write_table(table, fh)
        with atomic_open(d / LABELS_FILE) as fh:
            sp.save_npz(fh, self.label_matrix, compressed=True)
        meta = {"format": CORPUS_FORMAT, "corpus_id": self.corpus_id,
                "class_names": list(self.class_names), "n": len(self), "config": self.config,
                "stats": self.stats}
        atomic_write_text(d / CONFIG_FILE, json.dumps(meta, indent=2, ensure_ascii=False))
        logger.info("saved corpus %s (%d sentences) to %s", self.corpus_id, len(self), d)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "TextCorpus":
        """Read a corpus written by :meth:`save`, or by older versions (a dense ``label_matrix.npy``,
        read through a memory map a block of rows at a time)."""
        d = Path(directory)
        try:
            meta = json.loads((d / CONFIG_FILE).read_text())
            table = pq.read_table(d / SENTENCES_FILE)
            if (d / LABELS_FILE).exists() or not (d / DENSE_LABELS_FILE).exists():
                matrix = sp.load_npz(d / LABELS_FILE)
            else:
                matrix = np.load(d / DENSE_LABELS_FILE, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise DatasetError(f"cannot read text corpus in {d}: {e}") from e
        if meta.get("format") != CORPUS_FORMAT:
            raise DatasetError(f"unsupported corpus format {meta.get('format')!r} in {d}")
        corpus = cls(sentences=table.column("sentence").to_pylist(), label_matrix=matrix,
                     class_names=tuple(meta["class_names"]), corpus_id=meta["corpus_id"],
                     sources=table.column("source").to_pylist(), config=meta.get("config", {}),
                     stats=meta.get("stats", {}))
        if len(corpus) != meta.get("n"):
            raise DatasetError(f"corpus in {d} has {len(corpus)} rows, corpus.json says {meta.get('n')}")
        return corpus


def corpus_config(vocab: Vocabulary, n_sentences: int, generator: SentenceGenerator, seed: int,
                  max_labels: int, include_templates: bool, n_photo_copies: int,
                  templates: Sequence[str], parents: ParentMap | None = None,
                  background: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON-able description of a corpus build; with the content it makes the corpus id."""
    ident = generator.identity() if hasattr(generator, "identity") else {"kind": type(generator).__name__}
    return {"format": CORPUS_FORMAT, "vocab": vocab.to_dict(), "n_sentences": n_sentences,
            "seed": seed, "max_labels": max_labels, "include_templates": include_templates,
            "n_photo_copies": n_photo_copies if include_templates else 0,
            "templates": list(templates) if include_templates else [], "generator": ident,
            **parents_config(parents, vocab.labels), **({"background": list(background)} if background else {})}


def vocab_names(vocab: Vocabulary) -> set[str]:
    """Every label and synonym of ``vocab``, casefolded (what a template must not name by accident)."""
    return {n.casefold() for lab in vocab.labels for n in vocab.names(lab)}


def keep_valid(vocab: Vocabulary, label_sets: Sequence[Sequence[str]], generated: Sequence[str | None],
               ) -> tuple[list[str], list[Sequence[str]], int, int]:
    """Sentences that name every label of their set, those sets, and the counts of label sets
    without a sentence and with one that misses a label."""
    sentences: list[str] = []
    kept: list[Sequence[str]] = []
    missing = rejected = 0
    for labs, text in zip(label_sets, generated):
        if text is None:
            missing += 1
        elif not vocab.mentions_all(text, labs):
            rejected += 1
        else:
            sentences.append(text)
            kept.append(labs)
    return sentences, kept, missing, rejected


def comc_corpus(class_names: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None,
                cfg: ComcConfig | None = None, generator: SentenceGenerator | None = None) -> TextCorpus:
    """The corpus a CoMC config asks for: ``cfg.n_sentences`` sentences about ``class_names`` from
    ``generator`` (offline, seeded with ``cfg.text_seed``, when None), plus the prompt templates."""
    if cfg is None:
        from ..method.comc import ComcConfig  # lazily: it loads torch
        cfg = ComcConfig()
    names = list(class_names)
    generator = generator or OfflineGenerator(Vocabulary.create(names, synonyms or {}), seed=cfg.text_seed)
    background = background_nouns(names, synonyms, cfg.text_seed, cfg.background)
    return build_corpus(names, synonyms or {}, cfg.n_sentences, generator, seed=cfg.text_seed,
                        max_labels=cfg.max_labels, include_templates=cfg.include_templates, background=background)


def build_corpus(labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None,
                 n_sentences: int, generator: SentenceGenerator, seed: int, *,
                 max_labels: int = 5, include_templates: bool = True, n_photo_copies: int = 9,
                 templates: Sequence[str] = PROMPT_TEMPLATES,
                 plurals: Mapping[str, str] | None = None, max_missing: float = 0,
                 parents: ParentMap | None = None, background: Sequence[str] = ()) -> TextCorpus:
    """Sample ``n_sentences`` label sets, describe each with ``generator`` and add templates.

    ``background`` nouns (:mod:`.background`) join the labels the sets are drawn from and are recorded
    in the config: the corpus's :attr:`~TextCorpus.labels` leave them out.

    The sampled set is the label vector. Label sets the generator dropped (``None``) and
    sentences that do not mention all their labels are left out; when there are more of them
    than ``max_missing`` allows (see :func:`allowed_missing`) this raises
    :class:`~tagger.errors.IncompleteCorpusError`, else ``config["shortfall"]`` records them.
    ``parents`` (child -> parents) is recorded in the config; see :meth:`TextCorpus.targets`.
    """
    background = apart(background, labels)
    vocab = Vocabulary.create([*labels, *background], synonyms, plurals)
    config = corpus_config(vocab, n_sentences, generator, seed, max_labels, include_templates,
                           n_photo_copies, templates, parents, background)
    label_sets = sample_label_sets(vocab.labels, n_sentences, seed, max_labels)
    generated = generator.generate(label_sets)
    if len(generated) != len(label_sets):
        raise TextGenerationError(f"generator returned {len(generated)} sentences for {len(label_sets)} label sets")
    sentences, kept_sets, missing, rejected = keep_valid(vocab, label_sets, generated)
    gen_stats = getattr(generator, "last_stats", None)
    failed = min(gen_stats.failed, missing) if isinstance(gen_stats, GenerationStats) else 0
    config["shortfall"] = require_complete(n_sentences, {
        "failed at the endpoint": failed, "got no valid reply": missing - failed,
        "did not name every label": rejected}, max_missing)
    if n_sentences and not sentences:
        raise TextGenerationError("the generator produced no valid sentence")
    n_kept = len(sentences)
    sources = ["generated"] * n_kept
    if include_templates:
        pairs = template_sentences(vocab.labels, n_photo_copies, templates, vocab_names(vocab))
        sentences.extend(s for s, _ in pairs)
        kept_sets.extend((c,) for _, c in pairs)
        sources.extend("template" for _ in pairs)
    stats = {"sampled": n_sentences, "kept": n_kept, "dropped": missing, "rejected": rejected,
             "templates": len(sentences) - n_kept,
             "generator": gen_stats.to_dict() if isinstance(gen_stats, GenerationStats) else {}}
    logger.info("built corpus: %s", stats)
    matrix = label_matrix(kept_sets, vocab.labels)
    return TextCorpus(sentences=sentences, label_matrix=matrix, class_names=vocab.labels,
                      corpus_id=content_id(config, sentences, sources, matrix), sources=sources,
                      config=config, stats=stats)


def generator_from_config(labels: Sequence[str], synonyms: Mapping[str, Sequence[str]] | None = None,
                          *, llm_config: LLMConfig | None = None, cache_dir: str | Path | None = None,
                          seed: int = 0, environ: Mapping[str, str] | None = None,
                          plurals: Mapping[str, str] | None = None) -> SentenceGenerator:
    """The LLM generator when a model and an endpoint/key are configured, else the offline one.

    ``llm_config`` wins; otherwise :meth:`LLMConfig.from_env` reads ``environ`` (default: the
    process environment).
    """
    vocab = Vocabulary.create(labels, synonyms, plurals)
    cfg = llm_config if llm_config is not None else LLMConfig.from_env(environ)
    if cfg is not None:
        logger.info("text generator: LLM %s at %s", cfg.model, cfg.base_url or "default endpoint")
        return LLMGenerator(cfg, vocab, cache_dir=cache_dir, seed=seed)
    logger.info("text generator: offline grammar (no LLM configured)")
    return OfflineGenerator(vocab, seed=seed)
