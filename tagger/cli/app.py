"""The ``tagger`` command line: one verb per pipeline stage, plus catalog queries and search.

Every verb takes ``--workspace/-w`` (default ``$TAGGER_WORKSPACE``, else ``./workspace``). Named
library errors become a one-line ``error: ...`` on stderr and exit status 2.
"""
from __future__ import annotations

import errno
import logging
import os
import sys
from enum import Enum
from typing import Annotated, Any, Optional

import typer

from ..errors import CRASH_EXIT_CODE, ConfigError, SimulatedCrash, TaggerError
from ..pipeline.encode import EncodeConfig
from ..pipeline.nightly import CRASH_POINTS, NightlyConfig
from ..pipeline.tag import TagConfig
from ..pipeline.text import N_SENTENCES
from .catalog import labels_app, runs_app
from .sql import sql_cmd
from .options import (
    DEFAULT_WORKSPACE, JOB_WAIT, AnnotationsOpt, CalibrateWithOpt, CrashAfterOpt, DecisionOpt, DecisionRule,
    DecodeCpusOpt, EncodeCpusOpt, HeadKind, HeadOpt, JsonOpt, MaxMissingOpt, ModelOpt, NlOpt, NodeResourceOpt,
    NSentencesOpt, PartitionSizeOpt, PretrainedOpt, RowsJsonOpt, SourceOpt, WaitOpt, WorkspaceOpt, emit_rows,
    err_console, fail, finite, finite_non_negative, job_scope, one_source, output_format, print_summary, report_calibration,
    reported, workspace_at, workspace_target,
)
from .export import register as register_export
from .report import report_cmd
from .review import review_app
from .status import quiet_warnings

try:  # typer carries its own copy of click, whose exceptions its parser raises
    from typer._click import exceptions as usage_errors
except ImportError:  # an older typer runs on click itself
    from click import exceptions as usage_errors  # type: ignore[no-redef]
#: `tagger` alone (its help); click before 8.2 has no such error: then nothing is caught there.
_NO_ARGS: Any = getattr(usage_errors, "NoArgsIsHelpError", ())
#: Ctrl-C or end of input where the parser turns them into an abort (typer's own, or click's).
_ABORTS: Any = tuple({typer.Abort, getattr(usage_errors, "Abort", typer.Abort)})

HELP_OPTIONS = ["-h", "--help"]
INTERRUPTED = 130  # the exit status of a verb stopped by Ctrl-C
app = typer.Typer(add_completion=False, no_args_is_help=True, context_settings={"help_option_names": HELP_OPTIONS},
                  help="Tag image collections with labels nobody annotated.")


# -- pipeline verbs ----------------------------------------------------------------------------
@app.command()
def encode(
    source: Annotated[Optional[str], typer.Argument(
        help="folder, glob, .txt or .parquet manifest of image URIs; omit to encode only pending images")] = None,
    source_opt: SourceOpt = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    partition_size: PartitionSizeOpt = EncodeConfig.partition_size,
    batch_size: Annotated[int, typer.Option(min=1, help="images per model forward pass")] = EncodeConfig.batch_size,
    concurrency: Annotated[int, typer.Option(min=1, help="encoder actors")] = EncodeConfig.concurrency,
    decode_concurrency: Annotated[int, typer.Option(
        min=1, help="decode tasks in flight")] = EncodeConfig.decode_concurrency,
    num_gpus: Annotated[Optional[float], typer.Option(
        callback=finite_non_negative, help="GPUs per encoder actor (default: 1 if any)")] = None,
    encode_cpus: EncodeCpusOpt = EncodeConfig.encode_cpus,
    decode_cpus: DecodeCpusOpt = EncodeConfig.decode_cpus,
    node_resource: NodeResourceOpt = None,
    wait: WaitOpt = JOB_WAIT,
    as_json: JsonOpt = False,
    crash_after: CrashAfterOpt = None,
) -> None:
    """Register SOURCE's images, encode new or changed ones into shards and update the indexes (only new shards are added).

    Runs on the Ray cluster of $RAY_ADDRESS, or starts a local one for the call.
    """
    from .. import api
    from ..models.registry import absolute_checkpoint
    from ..models.resolve import record_model
    with reported():
        ws = workspace_target(workspace)  # nothing is written before the model is checked, nor among someone's files
        name, weights = ws.model(model, absolute_checkpoint(pretrained))
        record_model(ws, name, weights)  # checks the model, then records it
        cfg = EncodeConfig(model=name, pretrained=weights, partition_size=partition_size, batch_size=batch_size,
                           concurrency=concurrency, decode_concurrency=decode_concurrency,
                           num_gpus=num_gpus, encode_cpus=encode_cpus, decode_cpus=decode_cpus,
                           node_resource=node_resource)
        with job_scope(ws, "encode", wait):
            summary = api.encode(ws, one_source(source, source_opt), cfg, crash_after=crash_after)
    print_summary(f"encode {summary['model_id']}", summary, as_json)


@app.command("generate-text")
def generate_text(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    n_sentences: NSentencesOpt = N_SENTENCES,
    seed: Annotated[int, typer.Option(help="random seed of the label sets and the offline generator")] = 0,
    max_missing: MaxMissingOpt = 0,
    wait: WaitOpt = JOB_WAIT,
    as_json: JsonOpt = False,
) -> None:
    """Build the text corpus for the active labels (an LLM when $OPENAI_BASE_URL is set, else offline).

    A corpus made earlier with the same --n-sentences, --seed and generator is reused, extended for
    changed labels, or completed where it lacks sentences; other settings make a new corpus.
    """
    from ..pipeline.text import run_generate_text
    with reported():
        ws = workspace_at(workspace)
        with job_scope(ws, "generate-text", wait):
            summary = run_generate_text(ws, n_sentences, seed, max_missing=max_missing)
    print_summary(f"corpus {summary['corpus_id']}", summary, as_json)


@app.command()
def train(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    corpus_id: Annotated[Optional[str], typer.Option(help="text corpus to train on (default: the newest)")] = None,
    head: HeadOpt = HeadKind("comc"),
    annotations: AnnotationsOpt = None,
    reviewed: Annotated[bool, typer.Option("--reviewed", help=(
        "learn from the images people reviewed too (their tags after the review decisions)"))] = False,
    force: Annotated[bool, typer.Option("--force", help=(
        "keep the new head even when it does not validate better than the text-only head"))] = False,
    wait: WaitOpt = JOB_WAIT,
    as_json: JsonOpt = False,
) -> None:
    """Train the text-only classifier (and its memory banks) for the workspace's model, or with
    --annotations and/or --reviewed a head that learns from labelled images too.

    A head is fitted on part of the labelled images and validated against the text-only head on
    the rest (the table printed); the next tag run uses it only when it validates better (or with
    --force), else the text-only head. `tagger heads use text` goes back to the text-only head.
    """
    from .. import api
    from ..pipeline.guard import format_table
    with reported():
        ws = workspace_at(workspace)
        with job_scope(ws, "train", wait):
            summary = api.train(ws, model=model, pretrained=pretrained, head=head.value, annotations=annotations,
                                corpus_id=corpus_id, reviewed=reviewed, force=force)
    if "verdict" in summary and not as_json:
        for line in format_table(summary["validation"]) if summary["validation"] else []:
            typer.echo(line)
        typer.echo(summary["verdict"])
        summary = {k: v for k, v in summary.items() if k != "validation"}
    print_summary(f"classifier {summary['classifier_id']}", summary, as_json)


heads_app = typer.Typer(no_args_is_help=True, help="Choose the head the next tag run uses.")


@heads_app.command("use")
def heads_use(
    which: Annotated[str, typer.Argument(help="text (the newest text-only classifier) or a classifier id")],
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    wait: WaitOpt = JOB_WAIT,
    as_json: JsonOpt = False,
) -> None:
    """Make the next tag run (and the nightly job) use the text-only head, or classifier WHICH."""
    from ..models.resolve import workspace_model_id
    from ..pipeline.classifiers import use_head
    with reported():
        ws = workspace_at(workspace)
        with job_scope(ws, "train", wait):
            summary = use_head(ws, workspace_model_id(ws, model, pretrained), which)
    print_summary(f"next tag run uses {summary['classifier_id']} ({summary['head']})", summary, as_json)


app.add_typer(heads_app, name="heads")


class PatchSource(str, Enum):
    PQ = "pq"
    RAW = "raw"


@app.command()
def tag(
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    classifier_id: Annotated[Optional[str], typer.Option(help="classifier to use (default: the newest)")] = None,
    top_k: Annotated[int, typer.Option(min=1, help=(
        "the K best-scoring labels kept per image; positive labels beyond the K are kept too, so an "
        "image may get more than K tags"))] = TagConfig.top_k,
    decision: DecisionOpt = DecisionRule.ANCHORED,
    threshold: Annotated[Optional[float], typer.Option(callback=finite,
        help="--decision standardized: positive when the per-image standardised score reaches this "
             f"(default {TagConfig.threshold})")] = None,
    calibrate_with: CalibrateWithOpt = None,
    no_calibrate: Annotated[bool, typer.Option(
        "--no-calibrate", help="keep raw scores (no per-label z-score over a corpus sample)")] = False,
    patch_source: Annotated[PatchSource, typer.Option(
        help="pq: the compressed patch store; raw: the fp16 patches in the shards")] = PatchSource.PQ,
    concurrency: Annotated[int, typer.Option(min=1, help="tagging actors")] = TagConfig.concurrency,
    node_resource: NodeResourceOpt = None,
    no_current: Annotated[bool, typer.Option("--no-current", help="load the run without making it current")] = False,
    wait: WaitOpt = JOB_WAIT,
    as_json: JsonOpt = False,
    crash_after: CrashAfterOpt = None,
) -> None:
    """Tag every encoded image from its stored embeddings into a new run, and make it current."""
    from .. import api
    with reported():
        if threshold is not None and decision is not DecisionRule.STANDARDIZED:
            raise ConfigError(f"--threshold is for --decision standardized; --decision {decision.value} fits each "
                              "label's own threshold")
        ws = workspace_at(workspace)
        name, weights = ws.model(model, pretrained)
        cfg = TagConfig(top_k=top_k, decision=decision.value,
                        threshold=TagConfig.threshold if threshold is None else threshold, patch_source=patch_source.value,
                        concurrency=concurrency, calibrate=not no_calibrate, node_resource=node_resource)
        with job_scope(ws, "tag", wait):
            summary = api.tag(ws, cfg, model=name, pretrained=weights, classifier_id=classifier_id,
                              make_current=not no_current, crash_after=crash_after, calibrate_with=calibrate_with)
    report_calibration(summary)
    print_summary(f"run {summary['run_id']}", summary, as_json)
    if summary.get("vocabulary_behind"):
        err_console.print(f"warning: {summary['vocabulary_behind']}", markup=False)


@app.command()
def nightly(
    source: Annotated[Optional[str], typer.Argument(help="folder, glob or manifest to pick up new images from")] = None,
    source_opt: SourceOpt = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    n_sentences: NSentencesOpt = N_SENTENCES,
    keep_runs: Annotated[int, typer.Option(min=1, help=(
        "tag runs kept, the current one included; older runs lose their tags and their runs/<id>/ "
        "files"))] = NightlyConfig.keep_runs,
    max_missing: MaxMissingOpt = NightlyConfig.max_missing,
    decision: DecisionOpt = DecisionRule.ANCHORED,
    calibrate_with: CalibrateWithOpt = None,
    partition_size: PartitionSizeOpt = EncodeConfig.partition_size,
    encode_cpus: EncodeCpusOpt = EncodeConfig.encode_cpus,
    decode_cpus: DecodeCpusOpt = EncodeConfig.decode_cpus,
    node_resource: NodeResourceOpt = None,
    wait: WaitOpt = JOB_WAIT,
    as_json: JsonOpt = False,
    full: Annotated[bool, typer.Option("--full", help=(
        "retrain and re-tag every label even after a small label change (otherwise only the changed labels "
        "are trained and tagged, the others carried over from the current run)"))] = False,
    crash_at: Annotated[Optional[str], typer.Option(hidden=True, help=(
        "tests: die inside a long stage (STAGE:mid) or right after a stage"))] = None,
) -> None:
    """Encode new images, follow label changes, retrain, re-tag, switch current_tags (only the changed
    labels after a small label change; docs/jobs.md)."""
    from .. import api
    from ..models.registry import absolute_checkpoint
    from ..models.resolve import check_recordable
    with reported():
        if crash_at is not None and crash_at not in CRASH_POINTS:
            raise ConfigError(f"--crash-at must be one of {', '.join(CRASH_POINTS)}")
        ws = workspace_at(workspace)
        name, weights = ws.model(model, absolute_checkpoint(pretrained))
        check_recordable(ws, name, weights)  # before the job lock: the nightly records the model it encodes with
        enc = EncodeConfig(model=name, pretrained=weights, partition_size=partition_size, num_gpus=None,
                           encode_cpus=encode_cpus, decode_cpus=decode_cpus, node_resource=node_resource)
        cfg = NightlyConfig(n_sentences=n_sentences, keep_runs=keep_runs, max_missing=max_missing,
                            tag=TagConfig(decision=decision.value, node_resource=node_resource), full=full)
        with job_scope(ws, "nightly", wait):
            summary = api.nightly(ws, one_source(source, source_opt), cfg, encode_cfg=enc, crash_at=crash_at,
                                  calibrate_with=calibrate_with)
    report_calibration(summary)
    print_summary(f"nightly run {summary['run_id']}", summary, as_json)


# -- search ------------------------------------------------------------------------------------
class Level(str, Enum):
    GLOBAL = "global"
    PATCH = "patch"


@app.command()
def search(
    text: Annotated[Optional[str], typer.Argument(help="what to look for, in words")] = None,
    like: Annotated[Optional[str], typer.Option(
        "--like", help="find images like this one: an encoded image's URI or path, or a new image file")] = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="number of results")] = 10,
    level: Annotated[Level, typer.Option(
        help="global: whole-image embedding; patch: best-matching patch")] = Level.GLOBAL,
    exact: Annotated[bool, typer.Option(
        "--exact", help="search the exact global index or scan every patch even where an approximate index "
                        "is kept")] = False,
    shards: Annotated[Optional[int], typer.Option(
        min=1, help="search the approximate index (global or patch) split in N shards by image, one Ray "
                    "actor each (split first when needed)")] = None,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    device: Annotated[Optional[str], typer.Option(help="cpu | cuda (default: a GPU when present)")] = None,
    as_json: RowsJsonOpt = False,
    as_nl: NlOpt = False,
) -> None:
    """Find the images closest to TEXT (or to the image --like) in the global index or the patch store."""
    from ..pipeline.search import search_like, search_text
    with reported():
        if (text is None) == (like is None):
            raise ConfigError("give either TEXT or --like IMAGE (one of them)")
        ws = workspace_at(workspace)
        if like is not None:
            hits = search_like(ws, like, k, level.value, model=model, pretrained=pretrained, device=device,
                               exact=exact, shards=shards)
        else:
            hits = search_text(ws, text or "", k, level.value, model=model, pretrained=pretrained, device=device,
                               exact=exact, shards=shards)
    rows: list[tuple[Any, ...]]
    if level is Level.PATCH:
        cols = ("rank", "score", "image_id", "patch", "uri")
        rows = [(h.rank, h.score, h.image_id, h.patch, h.uri) for h in hits]
    else:
        cols = ("rank", "score", "image_id", "uri")
        rows = [(h.rank, h.score, h.image_id, h.uri) for h in hits]
    query = f"like {like}" if like is not None else repr(text)
    emit_rows(cols, rows, output_format(as_json, nl=as_nl), title=f"{query} ({level.value})")


@app.command()
def dedup(
    threshold: Annotated[Optional[float], typer.Option(
        help="cosine similarity of the global embeddings from which two images are candidates "
             "[default: measured, 0.66]")] = None,
    pixel_threshold: Annotated[Optional[float], typer.Option(
        help="colour-histogram overlap (0-1) that confirms a candidate pair [default: measured, 0.6]")] = None,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="confirm candidates from the images' pixels (reads candidate images)")] = True,
    rescan: Annotated[bool, typer.Option(help="compare every image again, not only the new ones")] = False,
    show: Annotated[int, typer.Option(min=0, help="groups to list (largest first)")] = 20,
    workspace: WorkspaceOpt = DEFAULT_WORKSPACE,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    wait: WaitOpt = JOB_WAIT,
    as_json: JsonOpt = False,
) -> None:
    """Group near-duplicate images (re-encodes, resizes, small crops, mirror images) into the catalog's
    near_duplicates table; later runs compare only new images."""
    from ..catalog import Catalog
    from ..catalog.duplicates import duplicate_groups
    from ..pipeline.dedup import DedupConfig, run_dedup
    with reported():
        given = {"threshold": threshold, "pixel_threshold": pixel_threshold}
        cfg = DedupConfig(verify=verify, **{k: v for k, v in given.items() if v is not None})
        ws = workspace_at(workspace)
        with job_scope(ws, "dedup", wait):
            summary = run_dedup(ws, cfg, model=model, pretrained=pretrained, rescan=rescan)
        with Catalog.open(ws.catalog, read_only=True) as cat:
            groups = duplicate_groups(cat, summary["model_id"], show) if show else []
    print_summary("near-duplicates", {**summary, "largest_groups": groups} if as_json else summary, as_json)
    if groups and not as_json:
        emit_rows(("group_id", "images", "min_similarity", "uris"),
                  [(g["group_id"], g["images"], g["min_similarity"], g["uris"]) for g in groups], "table",
                  title="near-duplicate groups")


# -- catalog verbs -----------------------------------------------------------------------------
app.command("sql")(sql_cmd)
app.add_typer(labels_app, name="labels")
app.add_typer(runs_app, name="runs")
app.add_typer(review_app, name="review")
register_export(app)  # export, import-keywords
__import__("tagger.cli.serve", fromlist=["register"]).register(app)  # serve
__import__("tagger.cli.status", fromlist=["register"]).register(app)  # status, --version, -v
__import__("tagger.cli.init", fromlist=["register"]).register(app)  # init
app.command("report")(report_cmd)
__import__("tagger.cli.evaluate", fromlist=["register"]).register(app)  # eval


def main(argv: list[str] | None = None, *, verb: str | None = None, prog_name: str | None = None,
         log_level: int = logging.WARNING) -> None:
    """Run the command line, or only its ``verb`` (the Ray jobs), on ``argv`` (default ``sys.argv[1:]``).

    Returns on success (``--help`` included); a usage or library error exits with status 2, and a
    test crash point (:class:`~tagger.errors.SimulatedCrash`) ends the process at once, as a kill would.
    """
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
                        if log_level < logging.WARNING else "%(levelname)s %(name)s: %(message)s")
    if log_level >= logging.WARNING:
        quiet_warnings()  # -v turns them back on
    if sys.stdout is None:  # started with stdout closed (`>&-`): what the verb prints would vanish
        sys.stderr.write("error: standard output is closed: nothing could be printed (redirect it to a file "
                         "or /dev/null)\n")
        raise SystemExit(2)
    command = typer.main.get_command(app)
    if verb is not None:
        command = command.commands[verb]  # type: ignore[attr-defined]
    try:
        code = command.main(args=argv, prog_name=prog_name, help_option_names=HELP_OPTIONS,  # a job's verb too
                            standalone_mode=False)
        if isinstance(code, int) and code:  # a verb's exit status (Ctrl-C: 130)
            if code == INTERRUPTED:
                sys.stderr.write("error: interrupted\n")
            raise SystemExit(code)
    except SystemExit as e:
        if e.code not in (0, None):  # errors exit with their status; success returns to the caller
            raise
    except _NO_ARGS as e:  # `tagger` alone: its help, as before
        typer.echo(e.ctx.get_help())
        raise SystemExit(e.exit_code) from None
    except usage_errors.UsageError as e:  # a bad option value: one line, as every other error
        hint = f" (see '{e.ctx.command_path} -h')" if e.ctx is not None else ""
        sys.stderr.write(f"error: {e.format_message()}{hint}\n")
        raise SystemExit(e.exit_code) from None
    except usage_errors.ClickException as e:
        sys.stderr.write(f"error: {e.format_message()}\n")
        raise SystemExit(e.exit_code) from None
    except _ABORTS:
        sys.stderr.write("error: interrupted\n")
        raise SystemExit(INTERRUPTED) from None
    except OSError as e:
        if e.errno == errno.EPIPE:
            raise
        # the machine refused: a full disk (numpy's own "N requested and M written" has no errno), a
        # permission, a missing mount; one line, the traceback with -v
        logging.getLogger(__name__).debug("the command ended on an OS error", exc_info=True)
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        full = e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or "requested and" in str(e)
        what = f"{e.strerror or 'No space left on device'}: the output could not be written" if full else \
            (e.strerror or str(e))
        sys.stderr.write(f"error: {what}{where}\n")
        raise SystemExit(2) from None
    except TaggerError as e:  # a named error a verb did not turn into its line: the same line, status 2
        try:
            fail(e)
        except typer.Exit as done:
            raise SystemExit(done.exit_code) from None
    except SimulatedCrash as e:
        logging.getLogger(__name__).warning("simulated crash: %s", e)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)  # like a killed process: no further cleanup
