"""The repository stands alone: the app deploys with requirements.txt alone (no torch on the app
side, dependencies in step), and docs/DESIGN.md and docs/CORRUPTIONS.md stay true to the code."""

import ast
import json
import re
import subprocess
import sys
from types import SimpleNamespace

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from tests.conftest import REPO

APP_FILES = [REPO / "app.py", *sorted((REPO / "views").glob("*.py")), *sorted((REPO / "dashboard").glob("*.py"))]
TORCH_SIDE = {"torch", "torchvision", "tqdm"}


def names(requirements: list[str]) -> set[str]:
    return {line.split(">")[0].split("<")[0].split("=")[0].strip().lower() for line in requirements}


def test_requirements_txt_matches_the_base_dependencies_and_has_no_torch():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert sorted(lines) == sorted(project["dependencies"])
    assert not names(project["dependencies"]) & {"torch", "torchvision"}
    assert {"torch", "torchvision", "scikit-learn", "tqdm"} <= names(project["optional-dependencies"]["compute"])


#: import name -> distribution name, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow"}
#: imported only where installed (a view offers more when they are), never required
OPTIONAL = {"umap"}


def test_every_third_party_module_the_app_imports_is_in_requirements_txt():
    required = names([line for line in (REPO / "requirements.txt").read_text().splitlines() if line and line[0] != "#"])
    local = {"compute", "dashboard", "views", "__future__"}
    for path in APP_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module or ""]
            else:
                continue
            for module in {m.split(".")[0] for m in modules} - local - OPTIONAL - set(sys.stdlib_module_names):
                assert DISTRIBUTIONS.get(module, module).lower() in required, f"{path.name} imports {module}"


def test_app_files_import_no_torch_side_module():
    for path in APP_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in TORCH_SIDE, f"{path.name} imports {module}"


def test_running_every_page_loads_no_torch():
    script = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(REPO / 'app.py')!r}, default_timeout=120).run()\n"
        "assert not at.exception, at.exception\n"
        "for page in sorted(__import__('pathlib').Path('views').glob('*.py')):\n"
        "    at.switch_page(str(page)).run()\n"
        "    assert not at.exception, (page, at.exception)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision'})\n"
        "print('LOADED', loaded)\n"
    )
    env_root = str(REPO / "data")
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**__import__("os").environ, "PRUNESCOPE_DATA": env_root},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOADED []" in result.stdout


# --- docs/DESIGN.md and docs/CORRUPTIONS.md stay true to the code ------------------------

DESIGN = REPO / "docs/DESIGN.md"
CORRUPTIONS = REPO / "docs/CORRUPTIONS.md"
#: where the repository's text may refer to files under docs/
SCANNED = [REPO / "README.md", REPO / "app.py"] + [
    path
    for folder in ("compute", "dashboard", "views", "bench", "tests", "docs")
    for path in sorted((REPO / folder).rglob("*"))
    if path.suffix in {".py", ".md", ".toml", ".txt", ".sh"} and "__pycache__" not in path.parts
]


def section(text: str, heading: str) -> str:
    """The part of a Markdown text under the heading that starts with `heading`, up to the
    next heading of the same or a higher level."""
    lines = text.splitlines()
    wanted = heading.lstrip("#").strip()
    start = next(i for i, line in enumerate(lines) if line.startswith("#") and line.strip("# ").startswith(wanted))
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].startswith("#") and len(lines[i].split()[0]) <= level),
        len(lines),
    )
    return "\n".join(lines[start:end])


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every Markdown table in `text` as (header cells, rows of cells)."""
    found, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif block:
            found.append((block[0], block[2:]))
            block = []
    return found


def table(text: str, *header: str) -> list[list[str]]:
    """The rows of the one table in `text` whose header starts with `header`."""
    matching = [rows for head, rows in tables(text) if tuple(head[: len(header)]) == header]
    assert len(matching) == 1, f"expected one table with header {header}, found {len(matching)}"
    return matching[0]


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def doc_type(dtype) -> str:
    """The notation docs/DESIGN.md uses for an Arrow type."""
    import pyarrow as pa

    simple = {
        pa.string(): "str", pa.large_string(): "str", pa.float32(): "f32", pa.float64(): "f64", pa.int64(): "i64",
        pa.int32(): "i32", pa.int16(): "i16", pa.int8(): "i8", pa.bool_(): "bool", pa.binary(): "binary",
    }  # fmt: skip
    if dtype in simple:
        return simple[dtype]
    if pa.types.is_list(dtype):
        return f"list<{doc_type(dtype.value_type)}>"
    raise AssertionError(f"docs/DESIGN.md has no notation for {dtype}; add one there and in doc_type")


def test_design_states_the_schema_version_of_the_code():
    from compute import schema

    for path in (DESIGN, REPO / "README.md"):
        text = path.read_text()
        stated = re.findall(r"schema version (\d+)", text) + re.findall(r"SCHEMA_VERSION`? \((\d+)\)", text)
        assert stated, f"{path.name} states no schema version"
        assert set(stated) == {str(schema.SCHEMA_VERSION)}, f"{path.name} states schema version(s) {set(stated)}"


def test_design_documents_every_table_and_column_with_its_type():
    from compute import schema

    snapshot = section(DESIGN.read_text(), "Snapshot folder")
    tables_of_schema = {
        **schema.TABLE_SCHEMAS, **schema.OPTIONAL_SCHEMAS, f"{schema.METRICS_DIR}/model_id=": schema.METRICS_SCHEMA
    }  # fmt: skip
    documented = set()
    for heading in re.findall(r"^### `([^`]+)`", snapshot, re.M):
        name = next((n for n in tables_of_schema if heading.startswith(n)), None)
        if name is None:
            assert not heading.endswith(".parquet"), f"docs/DESIGN.md documents {heading}, which the schema lacks"
            continue
        documented.add(name)
        columns = {}
        for row in table(section(snapshot, f"### `{heading}`"), "column", "type"):
            for column in ticked(row[0]):
                columns[column] = row[1]
        expected = {field.name: doc_type(field.type) for field in tables_of_schema[name]}
        assert columns == expected, f"docs/DESIGN.md, {heading}: columns and types differ from compute/schema.py"
    assert documented == set(tables_of_schema), f"tables without a section: {set(tables_of_schema) - documented}"
    layout = snapshot.split("```")[1]  # the folder tree
    for name in (schema.MANIFEST, *tables_of_schema, schema.CHECKPOINTS_DIR):
        assert name.split("=")[0] in layout, f"the snapshot folder's layout in docs/DESIGN.md lacks {name}"


def manifest_keys() -> set[str]:
    """The top-level manifest fields the writers put there, read from their source."""
    keys = set()

    def literal_keys(node: ast.Dict) -> set[str]:
        return {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}

    for name, marks in [
        ("assemble.py", {"name", "created"}), ("merge.py", {"name", "created"}), ("synth.py", {"name", "created"}),
        ("snapshot.py", {"schema_version", "complete"}),
    ]:  # fmt: skip
        for node in ast.walk(ast.parse((REPO / "compute" / name).read_text())):
            if isinstance(node, ast.Dict) and marks <= literal_keys(node):
                keys |= literal_keys(node)
    for node in ast.walk(ast.parse((REPO / "compute" / "pipeline.py").read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == "described":
            keys |= {k for ret in ast.walk(node) if isinstance(ret, ast.Return) for k in literal_keys(ret.value)}
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "described":
            if isinstance(node.slice, ast.Constant):
                keys.add(node.slice.value)
    return keys


def test_design_documents_every_manifest_field():
    from compute.snapshot import MANIFEST_FIELDS

    keys = manifest_keys()
    assert {"schema_version", "complete", "dataset", "corruptions", "merged_from", "synthetic", "shard"} <= keys
    manifest = section(DESIGN.read_text(), "### `manifest.json`")
    missing = sorted(key for key in keys | set(MANIFEST_FIELDS) if f"`{key}`" not in manifest)
    assert not missing, f"docs/DESIGN.md's manifest section lacks {missing}"


def test_design_names_every_method_with_its_family():
    from compute import schema
    from compute.prune import METHODS

    rows = table(section(DESIGN.read_text(), "Names used everywhere"), "method", "family")
    documented = {ticked(row[0])[0]: row[1] for row in rows}
    expected = {**schema.METHOD_FAMILIES, **{name: method.family for name, method in METHODS.items()}}
    assert documented == expected
    assert [ticked(row[0])[0] for row in rows][: len(schema.METHOD_FAMILIES)] == list(schema.METHOD_FAMILIES)
    for name, method in METHODS.items():  # the registry and the schema agree on each family
        assert schema.METHOD_FAMILIES.get(name, method.family) == method.family, name


def test_design_names_every_corruption_family_and_condition_id():
    from compute import corrupt, data, models, schema
    from compute.presets import PRESETS

    names = section(DESIGN.read_text(), "Names used everywhere")
    rows = table(names, "corruption", "family")
    assert [(ticked(row[0])[0], row[1]) for row in rows] == list(schema.CORRUPTION_FAMILIES.items())
    assert list(corrupt.CORRUPTIONS) == list(schema.CORRUPTION_FAMILIES)
    conditions = schema.build_conditions(list(schema.CORRUPTION_FAMILIES), schema.SEVERITIES)
    for row in rows:
        ids = [c.condition_id for c in conditions if c.corruption == ticked(row[0])[0]]
        assert row[2] == f"{ids[0]}–{ids[-1]}", row
    for label, families in (
        ("Condition families", schema.CONDITION_FAMILIES),
        ("Model families", schema.MODEL_FAMILIES),
    ):
        stated = re.search(rf"\*\*{label}\*\* \(`\w+`\): ([^.]+)\.", names)
        assert stated and re.split(r",\s+", stated.group(1)) == list(families), label
    assert (len(schema.BENCHMARK_CORRUPTIONS), len(schema.EXTRA_CORRUPTIONS)) == (15, 4)  # "15 ... and 4 extras"
    for registry in (data.DATASETS, models.ARCHITECTURES, PRESETS):
        for name in registry:
            assert f"`{name}`" in names, f"docs/DESIGN.md does not name {name}"


def registered_numbers(params) -> list[list[float]]:
    return [[float(v) for v in (p if isinstance(p, tuple) else (p,))] for p in params]


def test_corruptions_doc_gives_every_corruption_its_registered_parameters_and_rule():
    from compute import corrupt

    text = CORRUPTIONS.read_text()
    rows = table(section(text, "Parameters"), "family", "corruption", "parameters")
    documented = {ticked(row[1])[0]: row for row in rows}
    assert list(documented) == list(corrupt.CORRUPTIONS), "docs/CORRUPTIONS.md: corruptions or their order differ"
    for name, spec in corrupt.CORRUPTIONS.items():
        row = documented[name]
        assert row[0] == spec.family, name
        numbers = [[float(v) for v in cell.split(",")] for cell in row[3:]]
        assert numbers == registered_numbers(spec.params), f"docs/CORRUPTIONS.md: parameters of {name} differ"
        assert re.search(rf"^- `{name}`", section(text, "Rules"), re.M), f"docs/CORRUPTIONS.md has no rule for {name}"


def test_every_docs_path_the_repository_names_exists():
    named = {}
    for path in SCANNED:
        for target in re.findall(r"(?<![\w/.-])docs/[\w/.-]*\w\.(?:md|png)", path.read_text()):
            named.setdefault(target, path.relative_to(REPO))
    assert {"docs/DESIGN.md", "docs/CORRUPTIONS.md"} <= set(named)
    missing = {target: str(where) for target, where in named.items() if not (REPO / target).is_file()}
    assert not missing, f"paths named but absent: {missing}"


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lstrip("#").strip().lower()).replace(" ", "-")


def test_links_between_the_docs_resolve():
    for doc in sorted((REPO / "docs").glob("*.md")):
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (doc.parent / file).resolve() if file else doc
            assert linked.is_file(), f"{doc.name} links to {target}, which does not exist"
            if anchor:
                headings = [slug(line) for line in linked.read_text().splitlines() if line.startswith("#")]
                assert anchor in headings, f"{doc.name} links to {target}: no such heading"


def test_the_design_notes_are_named_by_their_place_in_docs():
    from compute.grow import EARLIER_PARAMETERS

    bare = re.compile(r"(?<![\w/.-])(?:DESIGN|CORRUPTIONS|STACK)\.md")
    stale = {}
    for path in SCANNED:
        relative = str(path.relative_to(REPO))
        if relative.startswith("docs/"):
            continue  # the docs link to each other by relative paths
        text = path.read_text()
        for earlier in EARLIER_PARAMETERS:  # old manifests' wording, recognised on purpose
            text = text.replace(earlier, "")
        lines = [i + 1 for i, line in enumerate(text.splitlines()) if bare.search(line)]
        if lines:
            stale[relative] = lines
    assert not stale, f"name docs/DESIGN.md or docs/CORRUPTIONS.md, not the bare file: {stale}"


def test_snapshots_written_before_the_docs_moved_still_grow():
    """`--add-to` compares the manifest's corruption record with the run's; the committed
    demo (and any snapshot of its time) names the parameters in the earlier wording."""
    from compute.assemble import corruption_source
    from compute.grow import corruption_record
    from compute.presets import get_preset

    manifest = json.loads((REPO / "data" / "demo" / "manifest.json").read_text())
    dataset = SimpleNamespace(image_shape=tuple(manifest["dataset"]["image_shape"]))
    assert corruption_record(manifest["corruptions"]) == corruption_source(get_preset("demo"), dataset)
