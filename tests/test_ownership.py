"""One owner for each thing, checked over the package's source: every temp-and-rename goes through
``tagger/atomic.py``, and every folder or file name of a workspace is built by ``tagger/workspace.py``.
Each check is shown able to fail on a probe module."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "tagger"

# --- one temp-and-rename -----------------------------------------------------------------------
#: Module functions that move a file or folder into place.
_MOVERS = {("os", "replace"), ("os", "rename"), ("os", "renames"), ("shutil", "move")}
#: The one module allowed to rename.
WRITER = "atomic.py"


def _docstring_ids(tree: ast.AST) -> set[int]:
    return {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def renames(path: Path) -> list[str]:
    """``line: what`` for each rename in ``path``: ``os.replace``/``os.rename``/``shutil.move``, a
    ``Path.replace(target)``/``Path.rename(target)`` (one positional argument, unlike ``str.replace``),
    a ``tempfile`` temp that is not a private folder, and a ``.tmp`` name."""
    tree = ast.parse(path.read_text())
    docs = _docstring_ids(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            base = f.value.id if isinstance(f.value, ast.Name) else None
            if (base, f.attr) in _MOVERS:
                found.append(f"{node.lineno}: {base}.{f.attr}")
            elif f.attr in ("replace", "rename") and len(node.args) == 1 and not node.keywords and base != "os":
                found.append(f"{node.lineno}: .{f.attr}(target)")
            elif base == "tempfile" and f.attr in ("NamedTemporaryFile", "mkstemp"):
                kw = {k.arg: k.value for k in node.keywords}
                if "delete" not in kw or not (isinstance(kw["delete"], ast.Constant) and kw["delete"].value is False):
                    continue  # removed when closed: not something renamed into place
                found.append(f"{node.lineno}: tempfile.{f.attr}(delete=False)")
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "shutil"):
            found += [f"{node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if (node.module, a.name) in _MOVERS]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
              and node.value.endswith(".tmp")):
            found.append(f"{node.lineno}: {node.value!r}")
    return sorted(found, key=lambda h: int(h.split(":")[0]))


#: Renames outside the writer that are not a commit of a file or folder: (file, what) -> why.
NOT_A_COMMIT: dict[tuple[str, str], str] = {
    ("export/keywords.py", "tempfile.NamedTemporaryFile(delete=False)"):
        "exiftool's -@ argument file: read by the subprocess, then removed; nothing is renamed",
}


def test_the_package_renames_only_in_the_atomic_writer() -> None:
    found = []
    for f in sorted(PKG.rglob("*.py")):
        rel = str(f.relative_to(PKG))
        if rel == WRITER:
            continue
        found += [f"{rel}:{hit}" for hit in renames(f) if (rel, hit.split(": ", 1)[1]) not in NOT_A_COMMIT]
    assert found == []


def test_the_writer_itself_is_seen_renaming() -> None:
    """The check finds the renames of the writer (so it would find them anywhere else)."""
    assert any("os.replace" in h for h in renames(PKG / WRITER))
    assert any("os.rename" in h for h in renames(PKG / WRITER))


def test_every_allowed_exception_still_exists() -> None:
    for (rel, what), why in NOT_A_COMMIT.items():
        assert any(h.endswith(f": {what}") for h in renames(PKG / rel)), (rel, what, why)


def test_the_rename_check_can_fail(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text('"""A docstring may say out.tmp."""\nimport os, shutil, tempfile\n'
                     'from os import replace\n'
                     'def f(out, name):\n'
                     '    tmp = out.with_name(out.name + ".tmp")\n'
                     '    tmp.replace(out)\n'
                     '    os.replace(tmp, out)\n'
                     '    shutil.move(tmp, out)\n'
                     '    out.rename(tmp)\n'
                     '    tempfile.NamedTemporaryFile(delete=False)\n'
                     '    tempfile.NamedTemporaryFile()\n'
                     '    return name.replace("a", "b"), os.path.join(name, "x")\n')
    assert renames(probe) == ["3: from os import replace", "5: '.tmp'", "6: .replace(target)", "7: os.replace",
                              "8: shutil.move", "9: .rename(target)", "10: tempfile.NamedTemporaryFile(delete=False)"]


# --- every workspace path built by the workspace -------------------------------------------------
from tagger.workspace import OWNED  # noqa: E402  (the names the workspace owns: the check's input)

#: The module that builds workspace paths.
OWNER = "workspace.py"
#: Files named inside a workspace's folders by the workspace (f-string prefixes and suffixes).
_NAMED_FILES = (("tags-", ".parquet"), ("prompts-", ".npz"), ("embeddings-", ".npy"))


def _owned_text(node: ast.AST) -> str | None:
    """The workspace name a path piece spells (a constant or an f-string), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr):
        text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    else:
        return None
    top = text.strip("/").split("/")[0]
    if top in OWNED or top.startswith(OWNED[0]):  # catalog.duckdb and its companions
        return text
    if any(text.startswith(a) and text.endswith(b) for a, b in _NAMED_FILES):
        return text
    return None


def workspace_paths(path: Path) -> list[str]:
    """``line: name`` for each workspace path ``path`` builds: ``x / "<name>"``, ``os.path.join(.., "<name>")``,
    ``x.joinpath("<name>")``, a ``tags-{..}.parquet``-like file name, and any mention of the catalog or
    settings file name outside a docstring."""
    tree = ast.parse(path.read_text())
    docs = _docstring_ids(tree)
    found = []
    for node in ast.walk(tree):
        pieces: list[ast.AST] = []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            pieces = [node.right]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("join", "joinpath"):
            pieces = list(node.args[1:] if node.func.attr == "join" else node.args)
        elif isinstance(node, ast.JoinedStr):
            pieces = [node]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if any(f in node.value for f in OWNED[:2]):  # catalog.duckdb, workspace.json: mentioned = built
                found.append(f"{node.lineno}: {node.value!r}")
            continue
        for piece in pieces:
            text = _owned_text(piece)
            if text is not None:
                found.append(f"{node.lineno}: {text!r}")
    return sorted(set(found), key=lambda h: int(h.split(":")[0]))


#: Mentions of a workspace name outside the workspace that build no path: (file, name) -> why.
NOT_A_PATH: dict[tuple[str, str], str] = {}


def test_no_workspace_path_is_built_outside_the_workspace() -> None:
    found = []
    for f in sorted(PKG.rglob("*.py")):
        rel = str(f.relative_to(PKG))
        if rel == OWNER:
            continue
        found += [f"{rel}:{hit}" for hit in workspace_paths(f) if (rel, hit.split(": ", 1)[1]) not in NOT_A_PATH]
    assert found == []


def test_the_workspace_is_seen_building_its_paths() -> None:
    hits = " ".join(workspace_paths(PKG / OWNER))
    for name in OWNED:
        assert repr(name) in hits or name.upper() in (PKG / OWNER).read_text(), name
    assert "'tags-{}.parquet'" in hits


def test_the_workspace_path_check_can_fail(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text('"""Docstrings may say catalog.duckdb and embeddings/."""\nimport os\n'
                     'def f(root, run_dir, name, ws):\n'
                     '    a = root / "thumbnails"\n'
                     '    b = os.path.join(root, "indexes", name)\n'
                     '    c = run_dir / f"tags-{name}.parquet"\n'
                     '    d = str(root) + "/catalog.duckdb"\n'
                     '    e = root.joinpath("report")\n'
                     '    return {"text": name, "report": 1}, ws.thumbnails_dir, f"tags-run{name}.csv"\n')
    assert workspace_paths(probe) == ["4: 'thumbnails'", "5: 'indexes'", "6: 'tags-{}.parquet'",
                                      "7: '/catalog.duckdb'", "8: 'report'"]
