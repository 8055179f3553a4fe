"""Training of the tiny toy-world CLIP models with open_clip's own classes and loss, in two stages.

1. ``labels``: the image tower alone, with a linear head and BCE on the labels that a caption of the
   scene mentions (``mentioned_labels``: the information a caption carries, small objects often left
   out); the head is discarded afterwards. With a ``teacher_model`` the tower also learns to match
   a trained teacher tower's image embeddings (cosine; :mod:`.distill`), which gives a ViT a much
   denser signal than 20 labels.
2. ``contrastive``: the whole CLIP model on (scene, caption) pairs with open_clip's ``ClipLoss``,
   started from stage 1 (``init_from``); the image tower can stay locked for the first steps while
   the text tower catches up, and then trains at a lower learning rate.

Scenes are rendered once and cached (:mod:`.render`). Training writes a checkpoint every
``checkpoint_every`` steps; the same command, run again, resumes from it. Runs on ``cpu`` or ``cuda``
and always writes fp16 CPU weights that the loader reads.
"""
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
from ..models.preprocess import pixel_spec
from ..atomic import atomic_open
from .captions import make_caption, mentioned_labels
from .distill import TeacherTargets, distill_loss, teacher_targets
from .render import RenderedSplit, render_split
from .scenes import SceneConfig
from .vocab import LABELS

__all__ = ["ClipTrainConfig", "STAGES", "evaluate_clip", "train_clip"]

logger = logging.getLogger(__name__)

STAGES = ("labels", "contrastive")
_RUNTIME_FIELDS = ("init_from", "threads", "device", "render_workers", "eval_every", "checkpoint_every")


@dataclass(frozen=True)
class ClipTrainConfig:
    model: str = "toy-vit"
    stage: str = "contrastive"  # one of STAGES
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
    init_from: str = ""  # start from these weights (stage 2 from stage 1, or a longer schedule)
    lock_image_steps: int = 0  # contrastive: image tower frozen for the first steps
    image_lr_scale: float = 1.0  # contrastive: image tower learning rate relative to ``lr``
    device: str = "cpu"
    render_workers: int = 0  # processes rendering scenes (0: one per core)
    checkpoint_every: int = 100
    teacher_model: str = ""  # labels stage: distil this trained tower's image embeddings ...
    teacher_weights: str = ""  # ... loaded from these weights
    distill_weight: float = 1.0
    dense_distill_weight: float = 0.0  # ... and its dense (patch) features, pooled onto the teacher's grid
    pos_init: str = ""  # "sincos": a fresh ViT's position embedding starts as a 2-D sine-cosine table


class _Run:
    """Model, optimiser and head of one training run, with their checkpoint."""

    def __init__(self, cfg: ClipTrainConfig):
        self.cfg = cfg
        self.model = open_clip.create_model(cfg.model).to(cfg.device)
        self.head = torch.nn.Linear(self.model.visual.output_dim, len(LABELS)).to(cfg.device)
        self.init_sha = ""
        if cfg.pos_init:
            init_positions(self.model, cfg.pos_init)
        if cfg.init_from:
            state = torch.load(cfg.init_from, map_location="cpu", weights_only=True)
            self.model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
            self.init_sha = registry.sha256_file(Path(cfg.init_from))
        self.opt = torch.optim.AdamW(self._groups(), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step, self.elapsed = 0, 0.0
        self.history: list[dict] = []
        self.targets: TeacherTargets | None = None  # when distilling

    def _groups(self) -> list[dict]:
        cfg = self.cfg
        named = list(self.model.visual.named_parameters(prefix="visual")) + list(self.head.named_parameters())
        if cfg.stage == "contrastive":
            named = list(self.model.named_parameters())
        groups = []
        for visual in (True, False):
            for decay in (True, False):
                ps = [p for n, p in named if n.startswith("visual") == visual
                      and (p.ndim >= 2 and "embedding" not in n) == decay]
                scale = cfg.image_lr_scale if visual and cfg.stage == "contrastive" else 1.0
                if ps:
                    groups.append({"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0,
                                   "lr_scale": scale, "visual": visual})
        return groups

    def set_lr(self, step: int) -> None:
        cfg = self.cfg
        lr = cfg.lr * (step + 1) / cfg.warmup if step < cfg.warmup else \
            0.5 * cfg.lr * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))
        locked = cfg.stage == "contrastive" and step < cfg.lock_image_steps
        for g in self.opt.param_groups:
            g["lr"] = 0.0 if (locked and g["visual"]) else lr * g["lr_scale"]

    def save(self, path: Path) -> None:
        state = {"config": asdict(self.cfg), "step": self.step, "history": self.history, "elapsed": self.elapsed,
                 "model": self.model.state_dict(), "head": self.head.state_dict(), "opt": self.opt.state_dict(),
                 "gen": self.gen.get_state(), "init_sha": self.init_sha}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as f:
            torch.save(state, f)

    def resume(self, path: Path) -> bool:
        if not path.exists():
            return False
        state = torch.load(path, map_location=self.cfg.device, weights_only=False)
        # the starting weights are compared by content (a run folder can move), and how the run is
        # executed (threads, device, logging cadence) may change between a stop and its resume
        def recipe(c: dict) -> dict:
            return {k: v for k, v in c.items() if k not in _RUNTIME_FIELDS}

        same = recipe(state["config"]) == recipe(asdict(self.cfg)) and state["init_sha"] == self.init_sha
        if not same:
            logger.warning("checkpoint %s was written by another config; starting afresh", path)
            return False
        self.model.load_state_dict(state["model"])
        self.head.load_state_dict(state["head"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.step, self.history, self.elapsed = state["step"], state["history"], state["elapsed"]
        self.init_sha = state["init_sha"]
        logger.info("resumed %s %s at step %d from %s", self.cfg.model, self.cfg.stage, self.step, path)
        return True


def sincos_table(grid: tuple[int, int], width: int) -> torch.Tensor:
    """``(1 + gh*gw, width)`` 2-D sine-cosine position table (a zero row for the class token)."""
    gh, gw = grid
    quarter = width // 4
    freq = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64),
                            indexing="ij")
    parts = []
    for pos in (ys.flatten(), xs.flatten()):
        ang = pos[:, None] * freq[None]
        parts += [ang.sin(), ang.cos()]
    table = torch.cat(parts, dim=1)
    table = torch.nn.functional.pad(table, (0, width - table.shape[1]))
    return torch.cat([torch.zeros(1, width, dtype=torch.float64), table]).float()


def init_positions(model, kind: str) -> None:
    """Start a ViT's (learned) position embedding from a fixed table; ResNets are left alone."""
    if kind != "sincos":
        raise ValueError(f"unknown pos_init {kind!r}; expected 'sincos'")
    v = model.visual
    if not hasattr(v, "class_embedding"):
        return
    with torch.no_grad():
        v.positional_embedding.copy_(sincos_table(tuple(v.grid_size), v.positional_embedding.shape[1]))


def _batch(run: _Run, data: RenderedSplit, spec, step: int) -> tuple:
    cfg = run.cfg
    idx = torch.randint(0, len(data), (cfg.batch_size,), generator=run.gen)
    x = spec.normalize(data.pixels[idx.numpy()], device=cfg.device)
    flip = torch.rand(cfg.batch_size, generator=run.gen) < 0.5
    x = torch.where(flip.to(cfg.device)[:, None, None, None], x.flip(-1), x)
    target = None if run.targets is None else run.targets.batch(flip, idx, cfg.device)
    return x, [data.scenes[int(i)] for i in idx], np.random.default_rng([cfg.seed, step]), target


def _step(run: _Run, loss_fn, tokenizer, x: torch.Tensor, scenes: list, rng: np.random.Generator,
          target: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    cfg, model = run.cfg, run.model
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.device.startswith("cuda")):
        if cfg.stage == "labels":
            y = torch.from_numpy(np.stack([mentioned_labels(s, rng) for s in scenes])).float().to(cfg.device)
            dist: float | torch.Tensor = 0.0
            if target is None or run.targets is None:
                emb = model.visual(x).float()
            else:
                dist, emb = distill_loss(model, x, *target, run.targets.grid, cfg.dense_distill_weight)
                emb = emb.float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(run.head(emb), y)
            loss = loss + cfg.distill_weight * dist
        else:
            locked = run.step < cfg.lock_image_steps
            model.visual.train(not locked)
            with torch.set_grad_enabled(not locked):
                img = model.encode_image(x, normalize=True)
            txt = model.encode_text(tokenizer([make_caption(s, rng) for s in scenes]).to(cfg.device), normalize=True)
            loss = loss_fn(img.float(), txt.float(), model.logit_scale.exp())
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return float(loss.item())


@torch.no_grad()
def _encode_images(model, spec, pixels: np.ndarray, device: str) -> torch.Tensor:
    return torch.cat([model.encode_image(spec.normalize(pixels[i:i + 256], device=device), normalize=True).float()
                      for i in range(0, len(pixels), 256)])


@torch.no_grad()
def evaluate_clip(model, model_name: str, tokenizer, val: RenderedSplit, seed: int = 99, device: str = "cpu",
                  head: torch.nn.Module | None = None) -> dict[str, float]:
    """Image->text R@1 over held-out pairs and zero-shot mAP with one prompt (and the labels head's mAP)."""
    from ..method.metrics import mean_average_precision
    from ..method.zeroshot import standardize

    was_training = model.training
    model.eval()
    rng = np.random.default_rng(seed)
    spec = pixel_spec(model_name)
    caps = [make_caption(s, rng) for s in val.scenes]
    img = _encode_images(model, spec, val.pixels, device)
    txt = torch.cat([model.encode_text(tokenizer(caps[i:i + 256]).to(device), normalize=True).float()
                     for i in range(0, len(caps), 256)])
    r1 = (img @ txt.T).argmax(1).eq(torch.arange(len(caps), device=device)).float().mean().item()
    cls = model.encode_text(tokenizer([f"a photo of a {c}." for c in LABELS]).to(device), normalize=True).float()
    scores = (img @ cls.T).cpu().numpy()
    out = {"i2t_r1": 100 * r1, "zs_map": mean_average_precision(scores, val.labels),
           "zs_map_std": mean_average_precision(standardize(scores), val.labels)}
    if head is not None:
        feats = torch.cat([model.visual(spec.normalize(val.pixels[i:i + 256], device=device)).float()
                           for i in range(0, len(val.pixels), 256)])
        out["head_map"] = mean_average_precision(head(feats).cpu().numpy(), val.labels)
    model.train(was_training)
    return out


def train_clip(cfg: ClipTrainConfig, out_dir: Path | None = None, checkpoint_dir: Path | None = None,
               cache_dir: Path | None = None) -> dict:
    """Run (or resume) one stage of ``cfg.model``'s training; write fp16 weights and a manifest."""
    if cfg.stage not in STAGES:
        raise ValueError(f"unknown stage {cfg.stage!r}; expected one of {STAGES}")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    registry.register_configs()
    spec = pixel_spec(cfg.model)
    t0 = time.time()
    train = render_split("train", cfg.n_train, spec.image_size, cache_dir, cfg.render_workers,
                         interpolation=spec.interpolation)
    val = render_split("val", cfg.n_val, spec.image_size, cache_dir, cfg.render_workers,
                       interpolation=spec.interpolation)
    logger.info("scenes ready in %.0f s", time.time() - t0)
    run = _Run(cfg)
    if cfg.teacher_model and cfg.stage == "labels":
        run.targets = teacher_targets(cfg.teacher_model, cfg.teacher_weights, cfg.n_train, cache_dir,
                                      cfg.device, cfg.render_workers)
        logger.info("distilling %s (sha %s) into %s", cfg.teacher_model, run.targets.sha[:12], cfg.model)
    ckpt = (checkpoint_dir or Path(out_dir or registry.WEIGHTS_DIR)) / f"{cfg.model}-{cfg.stage}.ckpt"
    run.resume(ckpt)
    tokenizer = open_clip.get_tokenizer(cfg.model)
    loss_fn = ClipLoss()
    run.model.train()
    t1 = time.time() - run.elapsed
    while run.step < cfg.steps:
        run.set_lr(run.step)
        loss = _step(run, loss_fn, tokenizer, *_batch(run, train, spec, run.step))
        run.step += 1
        run.elapsed = time.time() - t1
        if run.step % cfg.eval_every == 0 or run.step == cfg.steps:
            m = evaluate_clip(run.model, cfg.model, tokenizer, val, device=cfg.device,
                              head=run.head if cfg.stage == "labels" else None)
            m.update(step=run.step, loss=loss, elapsed_s=round(run.elapsed, 1))
            run.history.append(m)
            logger.info("%s %s step %d %s", cfg.model, cfg.stage, run.step,
                        " ".join(f"{k} {v:.3g}" for k, v in m.items() if k != "step"))
        if run.step % cfg.checkpoint_every == 0 and run.step < cfg.steps:
            run.save(ckpt)
    manifest = _save(run.model, cfg, run.history, Path(out_dir or registry.WEIGHTS_DIR), run.elapsed, run.init_sha,
                     run.targets.sha if run.targets is not None else "")
    ckpt.unlink(missing_ok=True)
    return manifest


def _save(model, cfg: ClipTrainConfig, history: list, out_dir: Path, seconds: float, init_sha: str = "",
          teacher_sha: str = "") -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu() for k, v in model.state_dict().items()}
    path = out_dir / f"{cfg.model}.pt"
    with atomic_open(path) as f:
        torch.save(state, f)
    manifest = {
        "model": cfg.model,
        "file": path.name,
        "sha256": registry.sha256_file(path),
        "train_config": asdict(cfg),
        "open_clip_config": open_clip.get_model_config(cfg.model),
        "history": history,
        "train_seconds": round(seconds, 1),
        "init_sha256": init_sha,
        "teacher_sha256": teacher_sha,
        "labels": list(LABELS),
        "scene_config": asdict(SceneConfig()),
    }
    with atomic_open(out_dir / f"{cfg.model}.json") as f:
        f.write((json.dumps(manifest, indent=2) + "\n").encode())
    return manifest
