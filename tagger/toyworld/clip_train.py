"""Contrastive training of the tiny toy-world CLIP models with open_clip's own classes and loss."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss

from ..models import registry
from ..models.preprocess import PixelSpec, pixel_spec
from .captions import make_caption
from .scenes import SceneConfig, make_scene
from .vocab import LABELS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipTrainConfig:
    model: str = "toy-vit"
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    n_train: int = 20000
    n_val: int = 1000
    seed: int = 0
    threads: int = 2
    eval_every: int = 200
    init_from: str = ""  # continue from these weights (a second stage of a longer schedule)


def _images(spec: PixelSpec, split: str, n: int) -> tuple[torch.Tensor, list]:
    """Rendered scenes as one uint8 (n, 3, H, W) tensor (normalised per batch) plus their metadata."""
    pixels = torch.empty((n, 3, spec.image_size, spec.image_size), dtype=torch.uint8)
    scenes = []
    for i in range(n):
        s = make_scene(i, split)
        pixels[i] = torch.from_numpy(spec.to_uint8(s.image))
        s.image = None  # keep only metadata for captioning
        scenes.append(s)
    return pixels, scenes


@torch.no_grad()
def evaluate_clip(model, model_name: str, tokenizer, images: torch.Tensor, scenes: list, seed: int = 99) -> dict[str, float]:
    """Image->text R@1 over held-out pairs and zero-shot mAP with one prompt."""
    from ..evaluate.metrics import mean_average_precision

    model.eval()
    rng = np.random.default_rng(seed)
    caps = [make_caption(s, rng) for s in scenes]
    spec = pixel_spec(model_name)
    img = torch.cat([model.encode_image(spec.normalize(images[i:i + 256]), normalize=True)
                     for i in range(0, len(images), 256)])
    txt = torch.cat([model.encode_text(tokenizer(caps[i:i + 256]), normalize=True) for i in range(0, len(caps), 256)])
    r1 = (img @ txt.T).argmax(1).eq(torch.arange(len(caps))).float().mean().item()
    cls = model.encode_text(tokenizer([f"a photo of a {c}." for c in LABELS]), normalize=True)
    scores = (img @ cls.T).numpy()
    labels = np.stack([s.labels for s in scenes])
    model.train()
    from ..zeroshot import standardize
    return {"i2t_r1": 100 * r1, "zs_map": mean_average_precision(scores, labels),
            "zs_map_std": mean_average_precision(standardize(scores), labels)}


def train_clip(cfg: ClipTrainConfig, out_dir: Path | None = None) -> dict:
    """Train ``cfg.model`` from scratch on toy scenes; write fp16 weights and a manifest."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    model = open_clip.create_model(cfg.model)
    init_sha = ""
    if cfg.init_from:
        state = torch.load(cfg.init_from, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        init_sha = registry.sha256_file(Path(cfg.init_from))
    tokenizer = open_clip.get_tokenizer(cfg.model)
    spec = pixel_spec(cfg.model)
    t0 = time.time()
    train_x, train_s = _images(spec, "train", cfg.n_train)
    val_x, val_s = _images(spec, "val", cfg.n_val)
    logger.info("rendered %d train + %d val scenes in %.0fs", cfg.n_train, cfg.n_val, time.time() - t0)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    loss_fn = ClipLoss()
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    model.train()
    t1 = time.time()
    for step in range(cfg.steps):
        lr = cfg.lr * (step + 1) / cfg.warmup if step < cfg.warmup else \
            0.5 * cfg.lr * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, cfg.n_train, (cfg.batch_size,), generator=gen)
        x = spec.normalize(train_x[idx])
        flip = torch.rand(cfg.batch_size, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        rng = np.random.default_rng([cfg.seed, step])
        caps = [make_caption(train_s[int(i)], rng) for i in idx]
        img_f, txt_f, scale = model(x, tokenizer(caps))[:3]
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            m = evaluate_clip(model, cfg.model, tokenizer, val_x, val_s)
            m.update(step=step + 1, loss=loss.item(), elapsed_s=round(time.time() - t1, 1))
            history.append(m)
            logger.info("%s step %d loss %.3f val R@1 %.1f zs-mAP %.1f (standardised %.1f)", cfg.model,
                        step + 1, loss.item(), m["i2t_r1"], m["zs_map"], m["zs_map_std"])
    return _save(model, cfg, history, out_dir or registry.WEIGHTS_DIR, time.time() - t0, init_sha)


def _save(model, cfg: ClipTrainConfig, history: list, out_dir: Path, seconds: float, init_sha: str = "") -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = out_dir / f"{cfg.model}.pt"
    torch.save(state, path)
    manifest = {
        "model": cfg.model,
        "file": path.name,
        "sha256": registry.sha256_file(path),
        "train_config": asdict(cfg),
        "open_clip_config": open_clip.get_model_config(cfg.model),
        "history": history,
        "train_seconds": round(seconds, 1),
        "init_sha256": init_sha,
        "labels": list(LABELS),
        "scene_config": asdict(SceneConfig()),
    }
    (out_dir / f"{cfg.model}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
