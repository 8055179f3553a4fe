"""Text for large vocabularies: the corpus, the LLM requests, and the time and memory of
generate-text and train as the vocabulary grows.

    python bench/text_scale.py [--labels 1000 10000] [--generators offline llm] [--steps generate train]
                               [--n-sentences 20000] [--model toy-rn]

Labels are the large toy vocabulary (305 with truth, then distractor words: bench/large_vocab.py).
Per vocabulary size and generator, a fresh workspace gets the labels, then each step runs as the CLI
runs it (``run_generate_text``, ``run_train``) in a child process of its own, so its wall time and
peak resident memory (``ru_maxrss`` of that process) are its alone. ``llm`` is the OpenAI-compatible
test server of ``tests/llm_server.py`` on 127.0.0.1 (it answers at once: the time is the client's),
and the requests are counted there. Then 10 labels are added and generate-text runs again (what a
nightly does): its requests and time. Train embeds every text once (corpus sentences, templates and
the memory banks' class prompts) and fits the classifier. One JSON line per run, then one summary.
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
        from tagger.pipeline.train import run_train
        res = run_train(ws, a.model)
        out = {"classifier_id": res["classifier_id"], "labels": res["labels"]}
    out["wall_s"] = round(time.time() - t0, 1)
    use = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = round(use.ru_utime + use.ru_stime, 1)  # the shared machine's wall time is not this step's
    out["peak_rss_mb"] = round(use.ru_maxrss / 1024, 1)
    print(json.dumps(out))


def run_child(args: list[str], timeout: float) -> dict:
    """Run one step as a child process; its JSON line (with its own peak RSS)."""
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": ((proc.stderr or "").strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def one(n_labels: int, gen: str, steps: list[str], n_sentences: int, model: str, timeout: float,
        cap_gb: float) -> dict:
    """Labels, generate-text, train, then 10 labels more and generate-text again, for one size."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from llm_server import LLMServer

    server = LLMServer().start() if gen == "llm" else None
    rec: dict = {"bench": "text_scale", "labels": n_labels, "generator": gen, "n_sentences": n_sentences}
    try:
        with tempfile.TemporaryDirectory(prefix="text-scale-") as tmp:
            base = ["--ws", str(Path(tmp) / "ws"), "--labels", str(n_labels), "--n-sentences", str(n_sentences),
                    "--model", model, "--hold-back", "10", "--cap-gb", str(cap_gb)]
            url = ["--base-url", server.base_url] if server else []
            rec["setup"] = run_child(["--child", "labels", *base], timeout)
            if "generate" in steps:
                rec["generate"] = run_child(["--child", "generate", *base, *url], timeout)
                rec["generate"]["requests"] = server.requests if server else 0
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
    p.add_argument("--n-sentences", type=int, default=20000)
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
            runs.append(one(n, gen, steps, a.n_sentences, a.model, a.timeout, a.cap_gb))
            print(json.dumps(runs[-1]), flush=True)
    print(json.dumps({"bench": "text_scale", "summary": runs}))


if __name__ == "__main__":
    main()
