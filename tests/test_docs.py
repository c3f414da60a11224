"""Docs that cannot drift (issue #19): README.md and docs/*.md checked against the code.

(a) every flag of every tool (``prnet.cli.common.TOOLS``) has a row with a description in its section of
    ``docs/cli.md``, and every flag row there is a real flag; the tool x shared-concept table names each
    concept's one flag, and the aliases column lists every deprecated spelling;
(b) every module under ``prnet/`` is named in ``docs/architecture.md`` (and every module named there exists;
    its layer diagram is ``LAYERS``);
(c) every command in the docs that runs a project tool (``prnet-*``, ``python train.py|evaluate.py|export.py``)
    uses only that tool's flags (or their aliases, or absl's own);
(d) every ``python`` snippet runs in a fresh process in a temporary folder (``slow``: they start TensorFlow),
    except those marked ``<!-- not-run: reason -->`` (they need weights, data or a server); a snippet marked
    ``<!-- needs: ... -->`` gets what it names made first (:data:`NEEDS`).

A tool's flags come from a fresh subprocess per tool (importing a tool module defines its flags and does not
import TensorFlow). ``python tests/test_docs.py`` rewrites the generated flag tables of ``docs/cli.md``.
"""

import functools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from prnet.cli.common import TOOLS

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
CLI_MD = DOCS / "cli.md"
ARCH_MD = DOCS / "architecture.md"

#: Root scripts and the tool each one runs (``python train.py`` == ``prnet-train``).
SCRIPTS = {"train.py": "prnet-train", "evaluate.py": "prnet-evaluate", "export.py": "prnet-export"}

#: Shared concepts of the tool x concept table in docs/cli.md: row label -> the flag's one name.
CONCEPTS = {
    "weights": "weights", "runtime": "backend", "precision": "precision", "download": "download",
    "untrained network": "smoke_test_random_weights", "face detector": "detector",
    "landmark annotations": "annotations", "landmark re-cropping": "refine", "UV template folder": "assets_dir",
    "model size": "model_size", "dataset": "dataset", "TFDS data folder": "data_dir",
    "output folder": "output_dir", "output file": "output", "verbosity": "verbosity",
}

#: The largest share of python snippets that may be marked not-run.
MAX_NOT_RUN_FRACTION = 0.4

_FLAG_DUMP = r"""
import importlib, json, sys
from absl import app, flags
m = sys.argv[1]
importlib.import_module(m)
app.define_help_flags()  # --help, --helpfull, --helpshort, --helpxml: defined when an absl app starts
key = {f.name: {"help": f.help or "", "bool": isinstance(f, flags.BooleanFlag), "default": f.default}
       for f in flags.FLAGS.get_key_flags_for_module(m)}
own = {}
for module, fl in flags.FLAGS.flags_by_module_dict().items():
    if module.split(".")[0] == "absl":
        for f in fl:
            own[f.name] = isinstance(f, flags.BooleanFlag)
            if f.short_name:
                own[f.short_name] = isinstance(f, flags.BooleanFlag)
print(json.dumps({"key": key, "absl": own}, default=str))
"""


def doc_files() -> list:
    return [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def tools() -> dict:
    """``{command: module}``: the tool registry."""
    return dict(TOOLS)


def aliases(tool: str) -> dict:
    """``{old name: new name}`` of the deprecated flag spellings ``tool`` accepts."""
    from prnet.cli import common

    table = {**common.ALIASES, **getattr(common, "TOOL_ALIASES", {}).get(tool, {})}
    return {old: new for old, new in table.items() if old in tool_flags(tool)["key"]}


@functools.cache
def tool_flags(tool: str) -> dict:
    """``{"key": {name: {"help", "bool", "default"}}, "absl": {name: is_bool}}`` of ``tool``, from a fresh
    process that imports only the tool's module (cached for the session)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    out = subprocess.run([sys.executable, "-c", _FLAG_DUMP, tools()[tool]], capture_output=True, text=True,
                         env=env, cwd=str(REPO), timeout=120)
    assert out.returncode == 0, f"{tool}: dumping its flags failed:\n{out.stderr[-3000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------- markdown


def code_blocks(path: Path) -> list:
    """``[(language, first line number, text, marker)]`` of the fenced blocks of a markdown file; ``marker``
    is the HTML comment on the line before the fence (blank lines skipped), or ``""``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = len(m.group(1)), m.group(2), i + 1
        j = start
        while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
            j += 1
        body = "\n".join(line[indent:] if line[:indent].strip() == "" else line for line in lines[start:j])
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = lines[k].strip() if k >= 0 and lines[k].strip().startswith("<!--") else ""
        blocks.append((lang, start + 1, body, marker))
        i = j + 1
    return blocks


def inline_commands(path: Path) -> list:
    """``[(line number, command)]``: inline code spans that start with a project tool."""
    found = []
    pattern = re.compile(r"`((?:prnet-[a-z-]+|python3? (?:train|evaluate|export)\.py)(?: [^`]*)?)`")
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        found.extend((n, m.group(1)) for m in pattern.finditer(line))
    return found


def sections(path: Path, level: int = 2) -> dict:
    """``{heading text: body}`` of the ``level`` headings of a markdown file (code blocks not parsed)."""
    text = path.read_text(encoding="utf-8")
    parts = re.split(rf"^{'#' * level} (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def table_rows(text: str) -> list:
    """The cells of every markdown table row in ``text`` (header and separator rows dropped)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|") or re.match(r"^\|[\s:|-]+\|$", line):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))]
        rows.append(cells)
    return rows


def tool_section(tool: str) -> str:
    """The body of ``tool``'s section of docs/cli.md (its heading starts with the command in backquotes)."""
    found = [body for head, body in sections(CLI_MD).items() if head.startswith(f"`{tool}`")]
    assert len(found) == 1, f"docs/cli.md: expected one '## `{tool}`...' section, found {len(found)}"
    return found[0]


FLAG_CELL = re.compile(r"^`--(?:\[no\])?([A-Za-z0-9_]+)`$")


def flag_rows(text: str) -> dict:
    """``{flag name: description}`` of the rows of the tables headed ``| flag | ...`` in ``text``."""
    rows, in_flags_table = {}, False
    for line in text.splitlines():
        if not line.strip().startswith("|"):
            in_flags_table = False
            continue
        parsed = table_rows(line)
        if not parsed:
            continue
        cells = parsed[0]
        if cells[0] == "flag":
            in_flags_table = True
            continue
        m = FLAG_CELL.match(cells[0])
        if in_flags_table and m:
            rows[m.group(1)] = cells[-1]
    return rows


# --------------------------------------------------------------------------------------------- README


def test_readme_is_a_front_door_with_the_ci_test_command():
    """README.md stays short, and its test command is the one ``.ci/run`` runs (extras, environment, lint,
    pytest), plus the fast lane for editing."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    extras = re.findall(r'pip install .*-e "(\.\[[^\]]*\])"', ci)
    assert extras, ".ci/run installs no extras?"
    for extra in extras:
        assert f'pip install -e "{extra}"' in readme, f"README: no `pip install -e \"{extra}\"` (.ci/run installs it)"
    for var, value in re.findall(r"^export ([A-Za-z_]+)=(\S+)", ci, flags=re.M):
        assert f"{var}={value}" in readme, f"README: .ci/run sets {var}={value}"
    runs = [re.sub(r"^python3 ", "python ", line.strip()) for line in ci.splitlines()
            if re.match(r"^\s*(ruff|python3? -m pytest)\b", line)]
    assert runs and all(run in readme for run in runs), f"README lacks one of {runs}"
    assert 'python -m pytest -q -m "not slow"' in readme


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_links_resolve():
    """Every relative link of README.md and docs/*.md names an existing file, and an existing heading."""
    broken = []
    for path in doc_files():
        text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                broken.append(f"{rel(path)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", dest.read_text(encoding="utf-8"),
                                                          flags=re.S), flags=re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{rel(path)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


# ------------------------------------------------------------------------------------------- (a) flags


def test_every_tool_has_a_section_and_an_installed_command():
    import shutil

    for tool, module in tools().items():
        tool_section(tool)
        assert module.startswith("prnet.cli."), (tool, module)
        assert shutil.which(tool), f"{tool}: not installed (pip install --no-deps -e .)"


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_flag_is_documented_in_cli_md(tool):
    """Each flag of ``tool`` has non-empty help and a row with a description in the tool's cli.md section;
    each flag row there is a flag of the tool."""
    flags_ = tool_flags(tool)["key"]
    assert flags_, f"{tool}: no key flags (does importing {tools()[tool]} define them?)"
    for name, info in flags_.items():
        assert info["help"].strip(), f"{tool} --{name}: empty help"
    rows = flag_rows(tool_section(tool))
    missing = sorted(set(flags_) - set(rows))
    assert not missing, (f"docs/cli.md, {tool}: no row for " + ", ".join(f"--{n}" for n in missing)
                         + "; `python tests/test_docs.py` rewrites the flag tables")
    for name in flags_:
        assert rows[name].strip(), f"docs/cli.md, {tool} --{name}: empty description"
    stale = sorted(set(rows) - set(flags_))
    assert not stale, f"docs/cli.md, {tool}: rows for flags the tool does not have: {stale}"


def has_flag(tool: str, name: str) -> bool:
    """Whether ``--name`` is one of ``tool``'s own flags (not a deprecated alias; absl's ``--verbosity`` counts)."""
    known = tool_flags(tool)
    return (name in known["key"] and name not in aliases(tool)) or (name == "verbosity" and name in known["absl"])


def concept_table() -> tuple:
    """``(tool columns, {concept: (cells, aliases cell)})`` of the shared-flags table of docs/cli.md."""
    body = sections(CLI_MD)["Shared flags"]
    lines = [line.strip() for line in body.splitlines() if line.strip().startswith("|")]
    header = [c.strip().strip("`") for c in lines[0].strip("|").split("|")]
    assert header[0] == "concept" and header[-1] == "aliases", header
    table = {}
    for cells in table_rows("\n".join(lines[1:])):
        table[cells[0]] = (cells[1:-1], cells[-1])
    return header[1:-1], table


def test_shared_flags_table_one_name_per_concept():
    """Acceptance: a table tool x shared concept -> flag name, all cells equal, aliases listed. Each cell is
    the tool's real flag (``–`` where the tool has no such flag), each alias a real deprecated spelling."""
    columns, table = concept_table()
    assert columns == list(tools()), f"columns {columns} != TOOLS {list(tools())}"
    assert list(table) == list(CONCEPTS), f"rows {list(table)} != {list(CONCEPTS)}"
    listed_aliases = set()
    for concept, (cells, alias_cell) in table.items():
        name = CONCEPTS[concept]
        for tool, cell in zip(columns, cells):
            if cell in ("–", "-"):
                assert not has_flag(tool, name), f"{concept}: {tool} has --{name}; the table says it has not"
                continue
            assert FLAG_CELL.match(cell) and FLAG_CELL.match(cell).group(1) == name, \
                f"{concept}, {tool}: cell {cell!r}; the one name of this concept is --{name}"
            assert has_flag(tool, name), f"{tool} has no --{name}"
        for old in re.findall(r"`--([A-Za-z0-9_]+)`", alias_cell):
            listed_aliases.add(old)
            holders = [t for t in columns if aliases(t).get(old) == name]
            assert holders, f"{concept}: --{old} is listed as an alias of --{name}, but no tool takes it as one"
            for tool in holders:
                assert tool_flags(tool)["key"][old]["help"].startswith("Deprecated alias"), (tool, old)
    every_alias = {old for tool in columns for old in aliases(tool)}
    assert every_alias <= listed_aliases, f"aliases missing from the table: {sorted(every_alias - listed_aliases)}"


# ------------------------------------------------------------------------------------ (b) architecture


def test_every_module_is_named_in_architecture_md():
    """Each ``prnet/**/*.py`` is named in its folder's row of the layout table; each module named exists."""
    rows = {}
    for cells in table_rows(ARCH_MD.read_text(encoding="utf-8")):
        m = re.match(r"^`(prnet/(?:[a-z_]+/)*)`$", cells[0])
        if m:
            rows[m.group(1)] = " ".join(cells[1:])
    modules = sorted(p.relative_to(REPO) for p in (REPO / "prnet").rglob("*.py") if "__pycache__" not in p.parts)
    missing = []
    for path in modules:
        folder = path.parent.as_posix() + "/"
        if f"`{path.name}`" not in rows.get(folder, ""):
            missing.append(path.as_posix())
    assert not missing, f"docs/architecture.md does not name: {missing}"
    existing = {p.as_posix() for p in modules}
    named = {folder + m for folder, text in rows.items() for m in re.findall(r"`([a-z_0-9]+\.py)`", text)}
    assert not named - existing, f"docs/architecture.md names modules that do not exist: {sorted(named - existing)}"


def test_architecture_diagram_is_the_layer_order():
    from test_architecture import LAYERS

    diagram = next(body for lang, _, body, _ in code_blocks(ARCH_MD) if lang == "text")
    drawn = [m.group(1) for m in re.finditer(r"^\s*([a-z_]+)/\s", diagram, flags=re.M)]
    assert drawn == list(reversed(LAYERS)), f"diagram (top to bottom) {drawn} != reversed LAYERS"


# ---------------------------------------------------------------------------------------- (c) commands


def shell_commands(text: str) -> list:
    """The simple commands of a shell snippet: ``\\`` continuations joined, comments dropped, split at
    ``&&``, ``||``, ``;`` and ``|``; leading ``NAME=value`` assignments dropped."""
    text = re.sub(r"\\\n", " ", text)
    commands = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current = []
        for token in lexer:
            if token in (";", "&&", "||", "|", "&"):
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    cleaned = []
    for cmd in commands:
        while cmd and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cmd[0]):
            cmd = cmd[1:]
        if cmd:
            cleaned.append(cmd)
    return cleaned


def project_tool(cmd: list):
    """``(tool, arguments)`` when ``cmd`` runs a project tool, else None."""
    if cmd[0].startswith("prnet-"):
        return cmd[0], cmd[1:]
    if re.match(r"^python3?$", cmd[0]) and len(cmd) > 1:
        if cmd[1] in SCRIPTS:
            return SCRIPTS[cmd[1]], cmd[2:]
        if cmd[1] == "-m" and len(cmd) > 2:
            by_module = {module: tool for tool, module in tools().items()}
            if cmd[2] in by_module:
                return by_module[cmd[2]], cmd[3:]
    return None


def documented_commands() -> list:
    """``[(where, tool, arguments)]`` of every project-tool command in shell blocks and inline code."""
    found = []
    for path in doc_files():
        for lang, line, body, _ in code_blocks(path):
            if lang in ("bash", "sh", "shell", "console", ""):
                for cmd in shell_commands(body):
                    hit = project_tool(cmd)
                    if hit:
                        found.append((f"{rel(path)}:{line}", *hit))
        for line, text in inline_commands(path):
            hit = project_tool(shlex.split(text.replace("…", "").replace("...", "")))
            if hit:
                found.append((f"{rel(path)}:{line} (inline)", *hit))
    return found


def unknown_flags(tool: str, args: list) -> list:
    """The ``--flags`` in ``args`` that ``tool`` does not take (its flags, their aliases, absl's own)."""
    known = tool_flags(tool)
    bools = {n for n, info in known["key"].items() if info["bool"]} | {n for n, b in known["absl"].items() if b}
    names = set(known["key"]) | set(known["absl"])
    bad = []
    for arg in args:
        if not arg.startswith("--") or arg == "--":
            continue
        name = arg[2:].split("=", 1)[0]
        if name in names or (name.startswith("no") and name[2:] in bools and "=" not in arg):
            continue
        bad.append(arg)
    return bad


def test_documented_commands_use_real_flags():
    commands = documented_commands()
    undocumented = set(tools()) - {tool for _, tool, _ in commands}
    assert not undocumented, f"tools without a documented command: {sorted(undocumented)}"
    problems = []
    for where, tool, args in commands:
        if tool not in tools():
            problems.append(f"{where}: {tool} is not a project tool ({sorted(tools())})")
            continue
        bad = unknown_flags(tool, args)
        if bad:
            problems.append(f"{where}: {tool} does not take {bad}")
    assert not problems, "\n".join(problems)


def test_named_scripts_and_tests_exist():
    """Every ``benchmarks/*.py`` and ``tests/*.py`` the docs name exists."""
    missing = []
    for path in doc_files():
        for name in set(re.findall(r"\b((?:benchmarks|tests)/[A-Za-z0-9_]+\.py)\b", path.read_text(encoding="utf-8"))):
            if not (REPO / name).is_file():
                missing.append(f"{rel(path)}: {name}")
    assert not missing, missing


def test_command_parser_catches_bad_flags():
    """The parser behind the command check (so a pass means something)."""
    cmds = shell_commands("X=1 prnet-demo --input a.jpg \\\n  --norefine --batch_size=2  # --bogus\n"
                          "pip install -e . && python train.py --epochs 2 | tee log")
    assert cmds[0] == ["prnet-demo", "--input", "a.jpg", "--norefine", "--batch_size=2"]
    assert project_tool(cmds[2]) == ("prnet-train", ["--epochs", "2"]) and project_tool(cmds[1]) is None
    assert unknown_flags("prnet-demo", cmds[0][1:]) == []
    assert unknown_flags("prnet-demo", ["--input_file", "--nobatch_size", "--helpfull", "--verbosity=1"]) == \
        ["--input_file", "--nobatch_size"]


# ---------------------------------------------------------------------------------------- (d) snippets


def python_snippets() -> list:
    """``[(id, code, marker)]`` of every python block of README.md and docs/*.md."""
    return [(f"{rel(path)}:{line}", body, marker) for path in doc_files()
            for lang, line, body, marker in code_blocks(path) if lang == "python"]


def _marker(marker: str, kind: str):
    m = re.match(rf"^<!--\s*{kind}:(.*)-->$", marker)
    return None if m is None else m.group(1).strip()


def test_snippet_markers():
    """Every python snippet either runs or says why not; few are skipped; only known needs are named."""
    snippets = python_snippets()
    assert snippets
    skipped = []
    for sid, _, marker in snippets:
        reason = _marker(marker, "not-run")
        if reason is not None:
            assert reason, f"{sid}: not-run without a reason"
            skipped.append(sid)
        needs = _marker(marker, "needs")
        if needs is not None:
            unknown = {n.strip() for n in needs.split(",")} - set(NEEDS)
            assert not unknown, f"{sid}: unknown needs {unknown} (known: {sorted(NEEDS)})"
    assert len(skipped) <= MAX_NOT_RUN_FRACTION * len(snippets), f"too many not-run snippets: {skipped}"


def _needs_tfds_tiny(home: Path, cache: Path, env: dict):
    """``prnet_synthetic/tiny`` in ``~/tensorflow_datasets``, built by the documented command (once)."""
    data = cache / "tensorflow_datasets"
    if not (data / "prnet_synthetic" / "tiny").is_dir():
        out = subprocess.run(["prnet-build-data", "--dataset", "prnet_synthetic/tiny", "--data_dir", str(data)],
                             capture_output=True, text=True, env=env, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
    (home / "tensorflow_datasets").symlink_to(data)


def _needs_export_random(home: Path, cache: Path, env: dict):
    """``exported_RANDOM_WEIGHTS/`` in the working folder: what the documented smoke export writes (here of a
    size-4 network, to be quick), made once."""
    target = cache / "exported_RANDOM_WEIGHTS"
    if not (target / "saved_model").is_dir():
        out = subprocess.run(["prnet-export", "--smoke_test_random_weights", "--model_size", "4",
                              "--formats", "saved_model,float32", "--output_dir", str(cache / "exported")],
                             capture_output=True, text=True, env=env, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
    (home / target.name).symlink_to(target)


#: What a ``<!-- needs: ... -->`` marker can ask for: name -> maker(home, session cache folder, env).
NEEDS = {"tfds_tiny": _needs_tfds_tiny, "export_random": _needs_export_random}


@pytest.fixture(scope="session")
def needs_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("docs_needs")


#: Modules besides the standard library that a snippet may import and still run in the fast lane (none of
#: them imports TensorFlow; the run checks it).
LIGHT_IMPORTS = ("numpy", "prnet.core")


def _imports_light(code: str) -> bool:
    """Whether every import of ``code`` is of the standard library or :data:`LIGHT_IMPORTS`."""
    mods = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", code, flags=re.M)
    return all(m.split(".")[0] in sys.stdlib_module_names
               or any(m == light or m.startswith(light + ".") for light in LIGHT_IMPORTS) for m in mods)


def _snippet_params() -> list:
    """One case per snippet: ``slow`` when it may start TensorFlow; those with the same needs share an xdist
    group (one worker makes them once)."""
    params = []
    for sid, code, marker in python_snippets():
        needs = _marker(marker, "needs")
        marks = [pytest.mark.xdist_group("docs_" + re.sub(r"\W+", "_", needs))] if needs else []
        if needs or not _imports_light(code):
            marks.append(pytest.mark.slow)
        params.append(pytest.param(sid, code, marker, id=sid, marks=marks))
    return params


@pytest.mark.parametrize("sid,code,marker", _snippet_params())
def test_python_snippet_runs(sid, code, marker, tmp_path, assets_dir, needs_cache):
    """The snippet runs as pasted: a fresh ``python`` in an empty folder that is also ``$HOME``, with the UV
    template (``PRNET_ASSETS_DIR``), an empty weights cache and no network."""
    if _marker(marker, "not-run") is not None:
        pytest.skip(f"not run: {_marker(marker, 'not-run')}")
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home), PRNET_ASSETS_DIR=str(assets_dir), PRNET_CACHE_DIR=str(home / "cache"),
               TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg", PRNET_WEIGHTS_BASE_URL="http://127.0.0.1:9/",
               PRNET_UV_BASE_URL="http://127.0.0.1:9/",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    env.pop("TFDS_DATA_DIR", None)
    needs = _marker(marker, "needs")
    for need in filter(None, (n.strip() for n in (needs or "").split(","))):
        NEEDS[need](home, needs_cache, env)
    (home / "snippet.py").write_text(code, encoding="utf-8")
    run = ["snippet.py"]
    if not needs and _imports_light(code):  # a fast-lane case: prove that it does not start TensorFlow
        run = ["-c", "import runpy, sys; runpy.run_path('snippet.py', run_name='__main__'); "
                     "assert 'tensorflow' not in sys.modules, 'the snippet imported TensorFlow (LIGHT_IMPORTS)'"]
    out = subprocess.run([sys.executable, *run], capture_output=True, text=True, env=env, cwd=str(home),
                         timeout=900)
    assert out.returncode == 0, f"{sid} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"


# ------------------------------------------------------------------------------- regenerate the tables


def _default(info: dict) -> str:
    value = info["default"]
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, bool) or info["bool"]:
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _cell(text: str) -> str:
    """One markdown table cell: one line, ``|`` escaped, ``<name>`` kept visible (not read as an HTML tag)."""
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def flag_table(tool: str) -> str:
    """The markdown flags table of ``tool`` (its key flags, aliases last)."""
    key = tool_flags(tool)["key"]
    old = set(aliases(tool))
    lines = ["| flag | default | meaning |", "|---|---|---|"]
    for name in sorted(key, key=lambda n: (n in old, n)):
        info = key[name]
        spelled = f"--[no]{name}" if info["bool"] else f"--{name}"
        default = _default(info)
        lines.append(f"| `{spelled}` | {f'`{_cell(default)}`' if default else ''} | {_cell(info['help'])} |")
    return "\n".join(lines)


def concept_table_text() -> str:
    columns = list(tools())
    lines = ["| concept | " + " | ".join(f"`{t}`" for t in columns) + " | aliases |",
             "|---|" + "---|" * len(columns) + "---|"]
    for concept, name in CONCEPTS.items():
        cells = [f"`--{name}`" if has_flag(tool, name) else "–" for tool in columns]
        olds = sorted({old for tool in columns for old, new in aliases(tool).items() if new == name})
        notes = []
        for old in olds:
            holders = [t for t in columns if old in aliases(t)]
            notes.append(f"`--{old}`" + ("" if len(holders) == len(columns) else f" ({', '.join(holders)})"))
        lines.append(f"| {concept} | " + " | ".join(cells) + " | " + ", ".join(notes) + " |")
    return "\n".join(lines)


def rewrite_cli_md() -> None:
    """Replace the generated tables of docs/cli.md (between ``<!-- flags: TOOL -->`` / ``<!-- shared-flags -->``
    and ``<!-- /generated -->``) with the registry's current flags."""
    text = CLI_MD.read_text(encoding="utf-8")

    def table(m):
        what = m.group(1).strip()
        body = concept_table_text() if what == "shared-flags" else flag_table(what.split(":", 1)[1].strip())
        return f"<!-- {what} -->\n{body}\n<!-- /generated -->"

    text = re.sub(r"<!-- (shared-flags|flags: [a-z-]+) -->\n.*?<!-- /generated -->", table, text, flags=re.S)
    CLI_MD.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    rewrite_cli_md()
    print(f"rewrote the flag tables of {rel(CLI_MD)}")
