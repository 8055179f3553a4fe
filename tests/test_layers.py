"""The package's layers hold: a table of what each layer may import, enforced for every layer (each rule
shown able to fail), SQL only in the catalog, and the jobs accept exactly the CLI's options."""
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


# --- the layer table -------------------------------------------------------------------------
#: The ground floor: modules every layer may import; among themselves they import only what is listed.
GROUND = ("errors", "ids", "atomic", "uris", "workspace", "targets", "textfile")

#: What each layer (a sub-package or a top-level module of ``tagger``) may import besides itself and
#: the ground floor. ``tagger`` is the package root (the public API), which may import every layer.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "ids": set(),
    "atomic": {"errors"},
    "uris": set(),
    "workspace": {"errors", "atomic"},
    "targets": {"errors", "atomic", "uris", "workspace"},
    "textfile": {"errors"},
    "method": set(GROUND) - {"workspace", "targets"},  # pure math: knows no workspace and no output file
    "models": set(GROUND),
    "store": set(GROUND),
    "text": {*GROUND, "method"},
    "catalog": {*GROUND, "method", "text"},
    "toyworld": {*GROUND, "method", "models", "store"},
    "evaluate": {*GROUND, "method", "models", "text", "store", "catalog", "toyworld"},
    "pipeline": {*GROUND, "method", "models", "text", "store", "catalog", "evaluate", "workspace"},
    "report": {*GROUND, "method", "store", "catalog"},
    "export": {*GROUND, "method", "text", "store", "catalog"},  # keywords meet label names as the vocabulary compares them
    "serve": {*GROUND, "method", "models", "text", "store", "catalog", "pipeline", "report", "export",
              "workspace"},
    "api": {*GROUND, "models", "pipeline"},
    "cli": {*GROUND, "method", "models", "text", "store", "catalog", "toyworld", "evaluate", "workspace",
            "pipeline", "report", "export", "serve", "api", "tagger"},
    "tagger": {*GROUND, "method", "models", "text", "store", "catalog", "toyworld", "evaluate", "workspace",
               "pipeline", "report", "export", "serve", "api", "cli"},
}
LAYERS = tuple(ALLOWED)

#: Imports the table forbids that the code still makes: (file under tagger/, layer imported) -> why.
#: Each is checked to still exist, so one that is fixed must leave this list.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> str | None:
    """The layer of a ``tagger.*`` module name (None for other packages; ``tagger`` for the root's own
    attributes, such as ``tagger.__version__``)."""
    parts = module.split(".")
    if parts[0] != "tagger" or len(parts) == 1:
        return None  # not ours, or the root package, which any submodule import loads anyway
    return parts[1] if parts[1] in ALLOWED else "tagger"


def file_layer(path: Path) -> str:
    parts = path.relative_to(PKG).with_suffix("").parts
    return "tagger" if parts == ("__init__",) else parts[0]


def layer_violations(path: Path, layer: str, package: str | None = None) -> list[str]:
    """The imports of ``path`` (a module of ``layer``) that the table forbids, as ``'<layer>: <module>'``."""
    allowed = ALLOWED[layer] | {layer}
    return sorted(f"{layer_of(m)}: {m}" for m in imports_of(path, package)
                  if layer_of(m) is not None and layer_of(m) not in allowed)


def test_the_table_names_every_layer_of_the_package() -> None:
    present = {file_layer(f) for f in files_under("")}
    assert present == set(ALLOWED), f"add {present - set(ALLOWED)} to the table, drop {set(ALLOWED) - present}"
    for layer, allowed in ALLOWED.items():
        assert allowed <= set(ALLOWED), (layer, allowed - set(ALLOWED))


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_imports_only_what_the_table_allows(layer: str) -> None:
    found = []
    for f in files_under(""):
        if file_layer(f) != layer:
            continue
        rel = str(f.relative_to(PKG))
        found += [f"{rel} imports {v}" for v in layer_violations(f, layer)
                  if (rel, v.split(":")[0]) not in KNOWN_EXCEPTIONS]
    assert found == []


def test_every_known_exception_still_exists() -> None:
    """An exception that was fixed leaves the list (so the rule is enforced again)."""
    for (rel, target), why in KNOWN_EXCEPTIONS.items():
        path = PKG / rel
        assert path.is_file(), (rel, why)
        assert any(v.startswith(f"{target}:") for v in layer_violations(path, file_layer(path))), (rel, target, why)


def _probe_package(layer: str) -> str:
    """The package a probe module of ``layer`` sits in (ground-floor and root modules sit in ``tagger``)."""
    return f"tagger.{layer}" if layer in ("method", "models", "text", "store", "catalog", "toyworld", "evaluate",
                                          "pipeline", "report", "export", "serve", "cli") else "tagger"


def _probe_import(layer: str, target: str, package: str) -> str:
    """A function-level relative import of ``target`` as written from ``package``."""
    dots = "." * len(package.split("."))
    return f"from {dots}{target} import something" if target != "tagger" else f"from {dots} import __version__"


@pytest.mark.parametrize("layer", LAYERS)
def test_each_rule_can_fail(layer: str, tmp_path: Path) -> None:
    """A probe module of ``layer`` importing every layer: exactly the forbidden ones are reported."""
    package = _probe_package(layer)
    probe = tmp_path / "probe.py"
    body = "\n".join(f"    {_probe_import(layer, t, package)}" for t in LAYERS if t != layer)
    probe.write_text(f'"""Probe."""\nimport numpy\n\n\ndef f():\n{body}\n')
    reported = {v.split(":")[0] for v in layer_violations(probe, layer, package=package)}
    assert reported == set(LAYERS) - ALLOWED[layer] - {layer}


def test_the_checker_sees_lazy_relative_and_absolute_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import numpy\nimport tagger.pipeline.tag\n\ndef f():\n    from ..catalog import Catalog\n"
                     "    from .. import report\n    import ray.data\n")
    assert layer_violations(probe, "method", package="tagger.method") == [
        "catalog: tagger.catalog", "catalog: tagger.catalog.Catalog", "pipeline: tagger.pipeline.tag",
        "report: tagger.report"]
    assert offenders([probe], ("ray",), package="tagger.method") == ["probe.py imports ray.data"]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Ids of the nodes under ``if TYPE_CHECKING:`` (imports for annotations only, never run)."""
    return {id(c) for n in ast.walk(tree) if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
            for b in n.body for c in ast.walk(b)}


def module_edges(path: Path, modules: set[str], package: str | None = None) -> set[str]:
    """The modules of ``modules`` that ``path`` imports when it runs (at the top or in a function; not
    under ``TYPE_CHECKING``): ``from pkg import sub`` is an edge to ``pkg.sub`` when that is a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if package is None:
        package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    skip = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                found.update(m for m in (".".join(parts[:k]) for k in range(len(parts), 0, -1)) if m in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod)
    return found & modules


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph`` (module -> modules it imports): its strongly connected components
    of more than one module, each sorted (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    cycles.append(sorted(comp))
    return sorted(cycles)


#: Import circles the code still has: each must still exist (so a fixed one leaves the list).
KNOWN_CYCLES: list[list[str]] = []


def test_no_module_imports_itself_through_others() -> None:
    """No circle of imports among the package's modules (within a layer too: the table cannot see those)."""
    files = files_under("")
    modules = {module_name(f) for f in files}
    graph = {module_name(f): module_edges(f, modules) - {module_name(f)} for f in files}
    cycles = import_cycles(graph)
    assert [c for c in cycles if c not in KNOWN_CYCLES] == []
    assert [c for c in KNOWN_CYCLES if c not in cycles] == [], "a known cycle is gone: drop it from KNOWN_CYCLES"


def test_the_cycle_check_can_fail(tmp_path: Path) -> None:
    """Two probe pipeline modules that import each other (one lazily) are a circle; a TYPE_CHECKING
    import and a one-way import are not."""
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text("from .b import run\n")
    b.write_text("def run():\n    from . import a\n")
    c.write_text("from typing import TYPE_CHECKING\nfrom .a import x\nif TYPE_CHECKING:\n    from .d import y\n")
    (tmp_path / "d.py").write_text("from .c import z\n")
    modules = {f"tagger.pipeline.{n}" for n in "abcd"}
    graph = {f"tagger.pipeline.{f.stem}": module_edges(f, modules, package="tagger.pipeline")
             for f in (a, b, c, tmp_path / "d.py")}
    assert graph["tagger.pipeline.c"] == {"tagger.pipeline.a"}
    assert import_cycles(graph) == [["tagger.pipeline.a", "tagger.pipeline.b"]]


def offenders(files: list[Path], forbidden: tuple[str, ...], package: str | None = None) -> list[str]:
    out = []
    for f in files:
        for mod in sorted(imports_of(f, package)):
            if any(mod == x or mod.startswith(x + ".") for x in forbidden):
                out.append(f"{f.name} imports {mod}")
    return out


def test_only_the_pipeline_imports_ray_and_nothing_imports_jobs() -> None:
    outside = [f for f in files_under("") if "pipeline" not in f.relative_to(PKG).parts]
    assert offenders(outside, ("ray",)) == []
    assert offenders(files_under(""), ("jobs",)) == []


def test_the_ray_and_jobs_rules_can_fail(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    import ray\n    from jobs.tag import main\n")
    assert offenders([probe], ("ray",), package="tagger.cli") == ["probe.py imports ray"]
    assert offenders([probe], ("jobs",), package="tagger.cli") == ["probe.py imports jobs.tag",
                                                                  "probe.py imports jobs.tag.main"]


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
            "import tagger.api; assert tagger.tag is tagger.api.tag and tagger.train is tagger.api.train; "
            "assert tagger.errors.TaggerError is tagger.TaggerError; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    with pytest.raises(AttributeError):
        importlib.import_module("tagger").no_such_verb


_SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|WITH)\s", re.I)
_SQL_BODY = re.compile(r"\b(FROM|INTO|TABLE|SET|AS)\b")


def _string_text(node: ast.AST) -> str | None:
    """The text of a string literal, an f-string (each ``{...}`` as ``{}``) or a ``+`` of them; else None."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _string_text(node.left), _string_text(node.right)
        if left is not None or right is not None:
            return (left if left is not None else "{}") + (right if right is not None else "{}")
    return None


def sql_strings(path: Path) -> list[int]:
    """Lines of ``path`` where a string (plain, f-string or concatenated; docstrings aside) starts
    like a SQL statement."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    inner = {id(c) for n in ast.walk(tree) if isinstance(n, (ast.JoinedStr, ast.BinOp)) for c in ast.walk(n)
             if c is not n}
    found = []
    for node in ast.walk(tree):
        if id(node) in docstrings or id(node) in inner:
            continue
        text = _string_text(node)
        if text is not None and _SQL.match(text) and _SQL_BODY.search(text):
            found.append(node.lineno)
    return found


def test_every_sql_statement_lives_in_the_catalog() -> None:
    """No string outside ``tagger/catalog/`` starts like a SQL statement."""
    found = [f"{f.relative_to(ROOT)}:{line}" for f in files_under("")
             if "catalog" not in f.relative_to(PKG).parts[:1] for line in sql_strings(f)]
    assert found == []


def test_the_sql_check_sees_plain_f_and_concatenated_strings(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text('"""SELECT x FROM docstrings is prose."""\n'
                     'a = "SELECT * FROM images"\n'
                     'b = f"SELECT {cols} FROM {table}"\n'
                     'c = "DELETE " + "FROM t WHERE id = ?"\n'
                     'd = f"selected {n} from the list"\n'
                     'e = "UPDATE " + name + " SET x = 1"\n')
    assert sql_strings(probe) == [2, 3, 4, 6]
