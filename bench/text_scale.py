"""Text for large vocabularies: the corpus, the LLM requests, and the time and memory of
generate-text and train as the vocabulary grows.

    nice -n 10 python bench/text_scale.py [--labels 1000 10000] [--generators offline llm]
        [--steps generate train] [--per-label 25 | --n-sentences N] [--epochs 20] [--model toy-rn]

Labels are the large toy vocabulary (305 with truth, then distractor words: bench/large_vocab.py).
Per vocabulary size and generator, a fresh workspace gets the labels, then each step runs as the CLI
runs it (``run_generate_text``, ``run_train``) in a child process of its own, so its wall time and
peak resident memory (``ru_maxrss`` of that process) are its alone. ``llm`` is the OpenAI-compatible
test server of ``tests/llm_server.py`` on 127.0.0.1 (it answers at once: the time is the client's),
and the requests are counted there. Then 10 labels are added and generate-text runs again (what a
nightly does): its requests and time. Train embeds every text once (corpus sentences, templates and
the memory banks' class prompts) and fits the classifier; it reports the embedding, the epochs
and the rest (text anchors, memory banks) apart, so that a run with fewer ``--epochs`` than the
classifier's 20 projects the full train (``train.projected_*``: measured parts plus the measured
epoch rate times the epochs left). The label sets give each label ``--per-label`` (25) generated
sentences about it on average (a set holds 3 labels on average: 25 x labels / 3 sets), where
quality stops improving (docs/benchmarks.md); templates add about 69 sentences per label.
One JSON line per run, then a table and one summary JSON line.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SET_SIZE = 3  # labels in a label set on average: uniform over 1..5


def child(a: argparse.Namespace) -> None:
    """One step in this process, its address space capped at ``--cap-gb``; prints a JSON line."""
    cap = int(a.cap_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    from tagger.workspace import Workspace

    ws = Workspace.at(a.ws)
    n_labels = a.labels[0]
    t0 = time.time()
    if a.child == "labels":
        from tagger.catalog import Catalog
        sys.path.insert(0, str(HERE))
        from large_vocab import vocab_of
        vocab = vocab_of(n_labels)
        names = list(vocab.labels[: n_labels - a.hold_back])
        if a.add_rest:
            names = list(vocab.labels[n_labels - a.hold_back: n_labels])
        with Catalog.open(ws.catalog) as cat:
            cat.add_labels(names, {n: list(vocab.synonyms.get(n, ())) for n in names})
        out = {"labels_added": len(names)}
    elif a.child == "generate":
        from tagger.pipeline.text import run_generate_text
        from tagger.text import LLMConfig
        llm = LLMConfig(model="test-model", base_url=a.base_url, api_key="test-key", concurrency=8,
                        backoff_base_s=0.001, backoff_max_s=0.01) if a.base_url else None
        res = run_generate_text(ws, a.n_sentences, 0, llm_config=llm)
        corpus_dir = ws.text_dir(res["corpus_id"])
        out = {"how": res["corpus"], "sentences": res["n_sentences"], "labels": res["labels"],
               "generated": res["stats"].get("kept", res["stats"].get("new_sentences")),
               "corpus_mb": round(sum(f.stat().st_size for f in corpus_dir.iterdir()) / 2**20, 2)}
    else:
        out = train_step(ws, a.model, a.epochs, a.sample)
    out["wall_s"] = round(time.time() - t0, 1)
    use = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = round(use.ru_utime + use.ru_stime, 1)  # the shared machine's wall time is not this step's
    out["peak_rss_mb"] = round(use.ru_maxrss / 1024, 1)
    print(json.dumps(out))


def _clock() -> tuple[float, float]:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return time.time(), use.ru_utime + use.ru_stime


def _timed(fn, into: dict):  # noqa: ANN001, ANN202
    """``fn`` adding its wall and CPU seconds to ``into`` on each call."""
    def wrapper(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        w0, c0 = _clock()
        try:
            return fn(*args, **kw)
        finally:
            w1, c1 = _clock()
            into["wall_s"] = into.get("wall_s", 0.0) + w1 - w0
            into["cpu_s"] = into.get("cpu_s", 0.0) + c1 - c0
    return wrapper


def _sampled_loads(n: int, into: dict) -> None:
    """Make ``TextCorpus.load`` return ``n`` of a corpus's sentences (a seeded sample, every label
    kept as a column); ``into["corpus_sentences"]`` gets the whole corpus's size."""
    import numpy as np

    from tagger.text import TextCorpus

    load = TextCorpus.load

    def sampled(cls, directory):  # noqa: ANN001, ANN202
        c = load(directory)
        into["corpus_sentences"] = len(c)
        if n >= len(c):
            return c
        rows = np.sort(np.random.default_rng(0).choice(len(c), n, replace=False))
        return TextCorpus([c.sentences[i] for i in rows], c.label_matrix[rows], c.class_names, c.corpus_id,
                          [c.sources[i] for i in rows], c.config, c.stats)
    TextCorpus.load = classmethod(sampled)  # type: ignore[method-assign, assignment]


def train_step(ws, model: str, epochs: int, sample: int = 0) -> dict:  # noqa: ANN001
    """``run_train`` as the CLI runs it, with ``epochs`` classifier epochs (on ``sample`` of the
    corpus's sentences when given); the embedding, the epochs and the rest timed apart, and the
    full train (every sentence, 20 epochs) projected from them when either was cut."""
    import tagger.method.classifier as classifier
    import tagger.method.comc as comc
    import tagger.pipeline.train as train
    from tagger.method.comc import ComcConfig

    size: dict = {}
    if sample:
        _sampled_loads(sample, size)

    full = classifier.TrainConfig().epochs
    parts: dict[str, dict] = {"embed": {}, "fit": {}, "anchors": {}}
    train.corpus_embeddings = _timed(train.corpus_embeddings, parts["embed"])
    comc.train_classifier = _timed(comc.train_classifier, parts["fit"])  # epochs and anchors
    classifier.text_anchors = _timed(classifier.text_anchors, parts["anchors"])
    res = train.run_train(ws, model, cfg=ComcConfig(train=classifier.TrainConfig(epochs=epochs)))
    out = {"classifier_id": res["classifier_id"], "labels": res["labels"], "epochs": epochs}
    if sample:
        out["sentences_trained"] = min(sample, size["corpus_sentences"])
        out["corpus_sentences"] = size["corpus_sentences"]
    scale = size["corpus_sentences"] / out["sentences_trained"] if sample else 1.0
    for key in ("wall_s", "cpu_s"):
        embed, anchors = parts["embed"].get(key, 0.0), parts["anchors"].get(key, 0.0)
        epoch = (parts["fit"].get(key, 0.0) - anchors) / max(1, epochs)
        out[f"embed_{key}"] = round(embed, 1)
        out[f"epoch_{key}"] = round(epoch, 2)
        out[f"anchors_{key}"] = round(anchors, 1)
        # what the cut left out: the other sentences' embedding, epochs and anchors, and the epochs not run
        out[f"_full_extra_{key}"] = (scale - 1) * (embed + anchors) + epoch * (scale * full - epochs)
    return out


def run_child(args: list[str], timeout: float) -> dict:
    """Run one step as a child process; its JSON line (with its own peak RSS)."""
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": ((proc.stderr or "").strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("wall_s", "cpu_s"):
        extra = out.pop(f"_full_extra_{key}", None)
        if extra:
            out[f"projected_{key}"] = round(out[key] + extra, 1)
    return out


def one(n_labels: int, gen: str, steps: list[str], n_sentences: int, model: str, timeout: float,
        cap_gb: float, epochs: int, sample: int) -> dict:
    """Labels, generate-text, train, then 10 labels more and generate-text again, for one size."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from llm_server import LLMServer

    server = LLMServer().start() if gen == "llm" else None
    rec: dict = {"bench": "text_scale", "labels": n_labels, "generator": gen, "n_sentences": n_sentences}
    try:
        with tempfile.TemporaryDirectory(prefix="text-scale-") as tmp:
            base = ["--ws", str(Path(tmp) / "ws"), "--labels", str(n_labels), "--n-sentences", str(n_sentences),
                    "--model", model, "--hold-back", "10", "--cap-gb", str(cap_gb), "--epochs", str(epochs),
                    "--train-sample", str(sample)]
            url = ["--base-url", server.base_url] if server else []
            rec["setup"] = run_child(["--child", "labels", *base], timeout)
            if "generate" in steps:
                rec["generate"] = run_child(["--child", "generate", *base, *url], timeout)
                rec["generate"]["requests"] = server.requests if server else 0
                rec["generate"]["label_sets"] = n_sentences
            if "train" in steps:
                rec["train"] = run_child(["--child", "train", *base], timeout)
            if "generate" in steps:
                run_child(["--child", "labels", *base, "--add-rest"], timeout)
                before = server.requests if server else 0
                rec["add_10"] = run_child(["--child", "generate", *base, *url], timeout)
                rec["add_10"]["requests"] = (server.requests - before) if server else 0
    finally:
        if server:
            server.stop()
    return rec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--generators", nargs="+", choices=("offline", "llm"), default=["offline", "llm"])
    p.add_argument("--steps", nargs="+", choices=("generate", "train"), default=["generate", "train"])
    p.add_argument("--per-label", type=int, default=25,
                   help="generated sentences about each label on average (default 25: 25 x labels / 3 label sets)")
    p.add_argument("--n-sentences", type=int, help="label sets in all (instead of --per-label)")
    p.add_argument("--epochs", type=int, default=20, help="classifier epochs (fewer: the full train is projected)")
    p.add_argument("--train-sample", dest="sample", type=int, default=0,
                   help="train on this many of the corpus's sentences (0: all; fewer: the full train is projected)")
    p.add_argument("--model", default="toy-rn")
    p.add_argument("--timeout", type=float, default=7200)
    p.add_argument("--cap-gb", type=float, default=8.0,
                   help="address-space cap of each step (a step over it fails with MemoryError: the machine is shared)")
    p.add_argument("--child", choices=("labels", "generate", "train"), help=argparse.SUPPRESS)
    p.add_argument("--ws", help=argparse.SUPPRESS)
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    p.add_argument("--hold-back", type=int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--add-rest", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a)
        return
    runs = []
    for n in a.labels:
        for gen in a.generators:
            # train does not depend on the generator: train once per size, with the first one
            steps = [s for s in a.steps if s != "train" or gen == a.generators[0]]
            count = a.n_sentences if a.n_sentences is not None else -(-a.per_label * n // SET_SIZE)
            runs.append(one(n, gen, steps, count, a.model, a.timeout, a.cap_gb, a.epochs, a.sample))
            print(json.dumps(runs[-1]), flush=True)
    print(table(runs))
    print(json.dumps({"bench": "text_scale", "summary": runs}))


def table(runs: list[dict]) -> str:
    """A Markdown table: one row per step run (projected numbers marked with *)."""
    head = ("| labels | generator | step | label sets | sentences | requests | wall s | CPU s | peak RSS MB |\n"
            "|---:|---|---|---:|---:|---:|---:|---:|---:|")
    lines = [head]
    for r in runs:
        for step in ("generate", "train", "add_10"):
            x = r.get(step)
            if not x:
                continue
            if "error" in x:
                lines.append(f"| {r['labels']} | {r['generator']} | {step} | | | | error: {x['error'][:60]} | | |")
                continue
            wall, cpu = x.get("wall_s"), x.get("cpu_s")
            if "projected_cpu_s" in x:
                wall, cpu = f"{x['projected_wall_s']}*", f"{x['projected_cpu_s']}*"
            name = step
            if step == "train" and "projected_cpu_s" in x:
                name = f"train (measured {x['epochs']} epochs on {x.get('sentences_trained', 'all')} sentences)"
            lines.append(f"| {r['labels']} | {r['generator'] if step != 'train' else '-'} | {name} | "
                         f"{r['n_sentences'] if step == 'generate' else ''} | "
                         f"{x.get('sentences', x.get('corpus_sentences', ''))} | "
                         f"{x.get('requests', '') if r['generator'] == 'llm' else ''} | {wall} | {cpu} | "
                         f"{x.get('peak_rss_mb')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
