"""The app deploys with requirements.txt alone: no torch on the app side, dependencies in step."""

import ast
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from tests.conftest import REPO

APP_FILES = [REPO / "app.py", *sorted((REPO / "views").glob("*.py")), *sorted((REPO / "dashboard").glob("*.py"))]
TORCH_SIDE = {"torch", "torchvision", "sklearn", "tqdm"}


def names(requirements: list[str]) -> set[str]:
    return {line.split(">")[0].split("<")[0].split("=")[0].strip().lower() for line in requirements}


def test_requirements_txt_matches_the_base_dependencies_and_has_no_torch():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert sorted(lines) == sorted(project["dependencies"])
    assert not names(project["dependencies"]) & {"torch", "torchvision"}
    assert {"torch", "torchvision", "scikit-learn", "tqdm"} <= names(project["optional-dependencies"]["compute"])


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
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision', 'sklearn'})\n"
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
