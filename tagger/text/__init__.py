"""Text corpora for CoMC-style text-only training: label-set sampling, sentence generators
(offline grammar or an OpenAI-compatible LLM, with a persistent cache), validation and
the saved :class:`TextCorpus`."""
from .base import GenerationResult, GenerationStats, SentenceGenerator
from .cache import SentenceCache, cache_key
from .corpus import TextCorpus, build_corpus, comc_corpus, generator_from_config
from .labelsets import label_matrix, sample_label_sets
from .llm import PROMPTS, LLMConfig, LLMGenerator, backoff_delay, make_prompt
from .offline import OfflineGenerator
from .templates import PHOTO_TEMPLATE, PROMPT_TEMPLATES, template_sentences
from .vocab import Vocabulary, mentions, mentions_all, plural

__all__ = [
    "PHOTO_TEMPLATE", "PROMPTS", "PROMPT_TEMPLATES", "GenerationResult", "GenerationStats",
    "LLMConfig", "LLMGenerator", "OfflineGenerator", "SentenceCache", "SentenceGenerator",
    "TextCorpus", "Vocabulary", "backoff_delay", "build_corpus", "cache_key", "comc_corpus",
    "generator_from_config", "label_matrix", "make_prompt", "mentions", "mentions_all",
    "plural", "sample_label_sets", "template_sentences",
]
