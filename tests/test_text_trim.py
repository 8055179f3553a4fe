"""ClipModel.encode_text cuts each batch after its longest sentence where that is exact (causal text
tower pooling the EOT token), and gives what open_clip's full-length ``encode_text`` gives."""
import numpy as np
import open_clip
import pytest
import torch

from tagger.models import ClipModel, load_clip
from tagger.models import loader

# very different token lengths, mixed so that sorting by length reorders them; the last one is
# longer than the toy models' 32-token context (the tokenizer truncates it, EOT at the end)
SENTENCES = [
    "a photo of a red circle next to a small blue square on a wooden table",
    "",
    "star",
    "a green triangle.",
    "an old black and white photograph of a crowded harbour at dawn, fishing boats and gulls",
    "dog",
    "a close-up of a yellow flower",
    " ".join(["a very long caption that goes on and on about many things"] * 6),
    "two cats sleeping on a sofa in the afternoon sun",
    "x",
]


def _full_length(clip: ClipModel, texts: list[str]) -> np.ndarray:
    """open_clip's own encode_text on every sentence padded to the full context."""
    with torch.inference_mode():
        f = clip.model.encode_text(clip.tokenizer(texts)).float()
    return torch.nn.functional.normalize(f, dim=-1).numpy()


def _spy_cuts(monkeypatch) -> list[int]:
    """Record the width of every batch the trimmed path runs."""
    widths: list[int] = []
    real = loader._encode_cut

    def spy(tower, toks, pool, eos):
        widths.append(int(toks.shape[1]))
        return real(tower, toks, pool, eos)

    monkeypatch.setattr(loader, "_encode_cut", spy)
    return widths


def _check_trimmed(clip: ClipModel, monkeypatch) -> None:
    widths = _spy_cuts(monkeypatch)
    want = _full_length(clip, SENTENCES)
    gaps = np.linalg.norm(want[:, None] - want[None], axis=-1) + np.eye(len(SENTENCES))
    assert gaps.min() > 1e-3  # distinct rows, so a wrong order shows
    got = clip.encode_text(SENTENCES, batch_size=3)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5)
    # four batches of similar lengths: the shortest cut to 3 tokens, the last to the longest sentence
    longest = int((clip.tokenizer(SENTENCES) != 0).sum(-1).max())
    assert len(widths) == 4 and widths == sorted(widths)
    assert widths[0] == 3 and widths[-1] == longest
    assert clip.encode_text([]).shape == (0, clip.embed_dim)


@pytest.mark.parametrize("name", ["toy-vit", "toy-rn"])
def test_toy_models_trimmed_equal_full_length(name, monkeypatch):
    clip = load_clip(name, device="cpu")
    _check_trimmed(clip, monkeypatch)


def test_random_open_clip_architecture_trimmed_equal_full_length(monkeypatch):
    torch.manual_seed(0)
    clip = load_clip("RN50", pretrained=None, device="cpu")  # random weights, 77-token CLIP text tower
    assert clip.model.context_length == 77
    _check_trimmed(clip, monkeypatch)


def test_custom_text_clip_trimmed_equal_full_length(monkeypatch):
    """CustomTextCLIP over a TextTransformer (its own forward slices the positional embedding but
    not the causal mask, so it cannot take a shorter batch): the trimmed path runs its parts."""
    torch.manual_seed(1)
    model = open_clip.create_model("toy-vit", pretrained=None, force_custom_text=True).eval()
    assert isinstance(model, open_clip.CustomTextCLIP)
    clip = ClipModel("toy-vit", None, model, None, open_clip.get_tokenizer("toy-vit"))
    _check_trimmed(clip, monkeypatch)


def test_eos_pool_is_trimmed(monkeypatch):
    clip = load_clip("toy-rn", device="cpu")
    monkeypatch.setattr(clip.model, "text_pool_type", "eos")
    monkeypatch.setattr(clip.model, "text_eos_id", clip.tokenizer.eot_token_id)
    _check_trimmed(clip, monkeypatch)


@pytest.mark.parametrize("change", ["pool-first", "pool-last", "no-mask", "open-mask", "one-future-open",
                                    "own-encode-text"])
def test_fallback_where_trimming_is_not_exact(change, monkeypatch):
    clip = load_clip("toy-vit", device="cpu")
    causal = _full_length(clip, SENTENCES)
    m = clip.model
    if change.startswith("pool-"):
        monkeypatch.setattr(m, "text_pool_type", change[5:])
    elif change == "no-mask":
        monkeypatch.setattr(m, "attn_mask", None)
    elif change == "open-mask":
        monkeypatch.setattr(m, "attn_mask", torch.zeros_like(m.attn_mask))
    elif change == "one-future-open":  # position 3 sees position 20, padding for most sentences
        mask = m.attn_mask.clone()
        mask[3, 20] = 0.0
        monkeypatch.setattr(m, "attn_mask", mask)
    else:  # a model whose encode_text is not open_clip's own
        own = type(m).encode_text.__get__(m)
        monkeypatch.setattr(m, "encode_text", lambda text, normalize=False: own(text, normalize) * 2)
    widths = _spy_cuts(monkeypatch)
    want = _full_length(clip, SENTENCES)
    got = clip.encode_text(SENTENCES, batch_size=3)
    assert widths == []
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the change matters: the model's full-length result is no longer the causal EOT one
    assert np.allclose(want, causal, atol=1e-4) == (change == "own-encode-text")


def test_texts_are_tokenised_a_chunk_at_a_time_in_order(monkeypatch):
    clip = load_clip("toy-rn", device="cpu")
    want = _full_length(clip, SENTENCES)
    widths, sizes, real = _spy_cuts(monkeypatch), [], clip.tokenizer
    monkeypatch.setattr(clip, "tokenizer", lambda texts: sizes.append(len(texts)) or real(texts))
    got = clip.encode_text(SENTENCES, batch_size=3, chunk=4)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert sizes == [4, 4, 2]  # never the whole list at once
    assert len(widths) == 2 + 2 + 1  # each chunk sorted and cut on its own (the whole list: 4 batches)
