"""The package's layers hold: what each layer may import, and the jobs accept exactly the CLI's options."""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "tagger"
JOBS = sorted(p.stem for p in (ROOT / "jobs").glob("*.py") if p.stem not in ("__init__", "common"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: str | None = None) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if package is None:
        package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from . import registry`
    return found


def files_under(folder: str) -> list[Path]:
    return sorted((PKG / folder).rglob("*.py")) if folder else sorted(PKG.rglob("*.py"))


def offenders(files: list[Path], forbidden: tuple[str, ...], package: str | None = None) -> list[str]:
    out = []
    for f in files:
        for mod in sorted(imports_of(f, package)):
            if any(mod == x or mod.startswith(x + ".") for x in forbidden):
                out.append(f"{f.name} imports {mod}")
    return out


LOWER_FORBIDDEN = ("tagger.catalog", "tagger.workspace", "tagger.pipeline", "tagger.cli", "ray")


@pytest.mark.parametrize("layer", ["method", "store"])
def test_method_and_store_know_no_catalog_workspace_or_ray(layer: str) -> None:
    assert files_under(layer), f"tagger/{layer}/ is empty"
    assert offenders(files_under(layer), LOWER_FORBIDDEN) == []


def test_only_the_pipeline_imports_ray_and_nothing_imports_jobs() -> None:
    outside = [f for f in files_under("") if "pipeline" not in f.relative_to(PKG).parts]
    assert offenders(outside, ("ray",)) == []
    assert offenders(files_under(""), ("jobs",)) == []


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The rule above can fail: a function-level relative import of the catalog is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("import numpy\n\ndef f():\n    from ..catalog import Catalog\n    import ray.data\n")
    assert offenders([probe], LOWER_FORBIDDEN, package="tagger.method") == [
        "probe.py imports ray.data", "probe.py imports tagger.catalog", "probe.py imports tagger.catalog.Catalog"]


def test_every_module_opens_with_a_docstring() -> None:
    missing = [str(f.relative_to(ROOT)) for f in files_under("") + sorted((ROOT / "jobs").glob("*.py"))
               if f.stat().st_size and ast.get_docstring(ast.parse(f.read_text())) is None]
    assert missing == []


def _help(capsys: pytest.CaptureFixture[str], call) -> str:
    call()  # --help returns (status 0)
    text = capsys.readouterr().out
    body = text.split("[OPTIONS]", 1)[1]  # after the usage line, which names the program
    return " ".join(body.split())


def _options(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))


@pytest.mark.parametrize("job", JOBS)
def test_jobs_accept_exactly_the_cli_verbs_options(job: str, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tagger.cli import main
    monkeypatch.setenv("COLUMNS", "200")
    verb = job.replace("_", "-")
    job_help = _help(capsys, lambda: importlib.import_module(f"jobs.{job}").main(["--help"]))
    cli_help = _help(capsys, lambda: main([verb, "--help"]))
    assert _options(cli_help) >= {"--workspace", "--json"}
    assert job_help == cli_help  # same options, defaults and help text
    # and an option the verb does not have is refused by the job as by the CLI
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(f"jobs.{job}").main(["--workspace", "ws", "--no-such-option"])
    assert exit_info.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err


def test_a_job_without_a_workspace_is_refused(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs.tag import main
    monkeypatch.delenv("TAGGER_WORKSPACE", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["--top-k", "3"])
    assert exit_info.value.code == 2
    assert "--workspace is required" in capsys.readouterr().err


def test_the_public_api_resolves_and_stays_light() -> None:
    import subprocess
    import sys
    code = ("import sys, tagger; heavy = [m for m in ('torch', 'ray', 'faiss') if m in sys.modules]; "
            "assert not heavy, heavy; [getattr(tagger, n) for n in tagger.__all__]; "
            "from tagger.pipeline.tag import run_tag; assert tagger.tag is run_tag; "
            "assert tagger.errors.TaggerError is tagger.TaggerError; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    with pytest.raises(AttributeError):
        importlib.import_module("tagger").no_such_verb


_SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|WITH)\s", re.I)
_SQL_BODY = re.compile(r"\b(FROM|INTO|TABLE|SET|AS)\b")


def test_every_sql_statement_lives_in_the_catalog() -> None:
    """No string literal outside ``tagger/catalog/`` starts like a SQL statement (docstrings aside)."""
    found = []
    for f in files_under(""):
        if "catalog" in f.relative_to(PKG).parts[:1]:
            continue
        tree = ast.parse(f.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                    and _SQL.match(node.value) and _SQL_BODY.search(node.value)):
                found.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert found == []
