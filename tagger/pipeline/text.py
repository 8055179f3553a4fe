"""The text stage: generate (or extend, or complete) the corpus of sentences for the active labels."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_dir

if TYPE_CHECKING:
    from ..workspace import Workspace

logger = logging.getLogger(__name__)

#: Label sets of a corpus unless told otherwise (generate-text, nightly).
N_SENTENCES = 20000


def _labels_and_synonyms(cat) -> tuple[list[str], dict[str, list[str]]]:
    labels = [lab for lab in cat.list_labels(include_retired=False)]
    if not labels:
        from ..errors import ConfigError
        raise ConfigError("no active labels: add some with `tagger labels add`")
    return [lab.name for lab in labels], {lab.name: list(lab.synonyms or []) for lab in labels}


def run_generate_text(workspace: "Workspace", n_sentences: int = N_SENTENCES, seed: int = 0, llm_config=None,
                      incremental: bool = True, max_missing: float = 0) -> dict[str, Any]:
    """Build the text corpus of the active labels; LLM when configured, else offline.

    With ``incremental`` (the default) the newest corpus made with the same ``n_sentences``,
    ``seed`` and generator is reused as it is when the vocabulary (labels and synonyms) did not
    change, extended with sentences for new label sets only when it did (a label whose synonyms
    changed gets its generated sentences written again), and completed when it lacks sentences.
    Other settings build a new corpus. The label hierarchy among the active labels is recorded with
    the corpus (a changed one makes a new corpus of the same sentences; training adds each label's
    ancestors to its sentences' targets). More label sets without a sentence than ``max_missing``
    allows (a fraction below 1, else a count) raise
    :class:`~tagger.errors.IncompleteCorpusError` and record nothing; LLM sentences are cached by
    (label set, prompt version, model) in the workspace, so the rerun requests only those missing.
    """
    from ..catalog import Catalog
    from ..text import TextCorpus, generator_from_config
    from ..text.corpus import missing_label_sets
    from ..text.incremental import update_corpus

    with Catalog.for_job(workspace.catalog, "generate-text") as cat:
        labels, synonyms = _labels_and_synonyms(cat)
        parents = cat.active_hierarchy()
        gen = generator_from_config(labels, synonyms, llm_config=llm_config, cache_dir=workspace.llm_cache,
                                    seed=seed)
        try:
            corpus, how = update_corpus(cat.corpora() if incremental else [],
                                        lambda cid: TextCorpus.load(workspace.text_dir(cid)), labels, synonyms,
                                        gen, n_sentences, seed, max_missing=max_missing, parents=parents)
        finally:
            getattr(gen, "close", lambda: None)()
        out = workspace.text_dir(corpus.corpus_id)
        if not (out / "corpus.json").exists():
            with atomic_dir(out) as tmp:  # a folder a killed run left half-written is replaced
                corpus.save(tmp)
        cat.add_corpus(corpus.corpus_id, len(corpus.sentences), labels=labels, path=workspace.relative(out),
                       config=corpus.config)
    missing = missing_label_sets(corpus)
    logger.info("corpus %s (%s): %d sentences for %d labels", corpus.corpus_id, how, len(corpus.sentences),
                len(labels))
    if missing:
        logger.warning("corpus %s lacks sentences for %d label sets (within the tolerance)", corpus.corpus_id, missing)
    return {"corpus_id": corpus.corpus_id, "corpus": how, "n_sentences": len(corpus.sentences),
            "labels": len(labels), "missing_label_sets": missing, "stats": corpus.stats}
