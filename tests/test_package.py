"""editprobe as a user installs it: sdist -> wheel, installed into a fresh virtual environment, run from an empty
directory with no checkout in sight.

The expected wheel contents are read from the repository's own folders (every YAML under tasks/, every schema,
template, static asset and release file), not from the wheel; the wheel must hold each under ``editprobe/`` and
nothing else at its top level.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.leaderboard_fixtures import TASKS, file_run, load

pytestmark = [pytest.mark.wheel, pytest.mark.model]

REPO = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".venv", "build", ".git", "*.egg-info", "__pycache__", ".pytest_cache", "dist")


def _expected_data_files() -> dict[str, str]:
    """{path inside the wheel: repository path} of every data file a run needs."""
    pairs = {}
    for folder, package, patterns in (("tasks", "tasks", ["**/*.yaml"]), ("schemas", "schemas", ["*.schema.json"]),
                                      ("leaderboard", "leaderboard", ["templates/*.html", "static/*", "SUBMITTING.md"]),
                                      ("dataset_builder/release", "dataset_builder/release",
                                       ["*.yaml", "*.jsonl", "*.md", "llm_cache/*/*.json"])):
        for pattern in patterns:
            for f in (REPO / folder).glob(pattern):
                pairs[f"editprobe/{package}/{f.relative_to(REPO / folder).as_posix()}"] = str(f)
    return pairs


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel built offline from a copy of the checkout; the wheel is built from the sdist, so a file
    the sdist lacks is missing from the wheel too."""
    root = tmp_path_factory.mktemp("dist")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=SKIP)
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "out"), str(src)],
                   check=True, capture_output=True, text=True, cwd=src)
    return root / "out"


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> Path:
    """A fresh venv holding only the editprobe wheel; its dependencies come from the test environment's
    site-packages through a .pth line (offline, nothing downloaded). Returns the venv's bin folder."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    py = venv / "bin" / "python"
    (wheel,) = dist.glob("editprobe-*.whl")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, text=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "editprobe-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def _cli(bin_dir: Path, cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(bin_dir / "editprobe"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_wheel_holds_only_editprobe_with_its_data(dist):
    (wheel,) = dist.glob("editprobe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"editprobe", wheel.name.split("-py3")[0] + ".dist-info"}
    expected = _expected_data_files()
    assert len(expected) > 100 and "editprobe/tasks/hparams/rome/llama2-7b.yaml" in expected
    missing = sorted(set(expected) - set(names))
    assert not missing, f"the wheel lacks {missing[:5]} (and {max(0, len(missing) - 5)} more)"
    for package in ("benchmark", "benchmark/editors", "dataset_builder", "leaderboard"):
        assert f"editprobe/{package}/__init__.py" in names
    assert not [n for n in names if n.startswith(("benchmark/", "dataset_builder/", "leaderboard/", "tests/"))]


def test_installed_wheel_runs_from_an_empty_directory(installed, data_dir, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    where = subprocess.run([str(installed / "python"), "-c", "import editprobe, editprobe.benchmark as b; "
                            "print(editprobe.__file__); print(b.__file__)"],
                           cwd=work, capture_output=True, text=True, check=True).stdout.split()
    assert all(str(installed.parent) in w for w in where), where    # the wheel's copy, not the checkout
    package_root = Path(where[0]).parent
    before = sorted(p.relative_to(package_root) for p in package_root.rglob("*") if "__pycache__" not in p.parts)

    listed = _cli(installed, work, "tasks", "list")
    assert listed.returncode == 0, listed.stderr
    assert {line.split()[0] for line in listed.stdout.splitlines()} >= {"zsre", "wiki_recent", "wiki_counterfact"}
    shown = _cli(installed, work, "tasks", "show", "zsre")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["dataset"]["config"] == "zsre"
    editors = _cli(installed, work, "editors", "list")
    assert editors.returncode == 0 and "llama2-7b" in editors.stdout   # presets read from the installed data

    submissions = tmp_path / "submissions"
    for name in ("zsre-noop", "zsre-ft"):
        file_run(submissions, *load(name))
    site = _cli(installed, work, "leaderboard", "build", "--submissions", str(submissions), "--tasks-dir", str(TASKS),
                "--out", "site")
    assert site.returncode == 0, site.stderr
    assert "ft" in (work / "site" / "index.html").read_text()
    assert "What is checked" in (work / "site" / "submit.html").read_text()    # the packaged guide

    # The packaged release recipe: its committed cache is read, never written (misses would go to EDITPROBE_CACHE).
    built = _cli(installed, work, "build", "--recipe", "release", "--limit", "2", "--data-dir", str(data_dir),
                 "--out", "pset", "--quiet")
    assert built.returncode == 0, built.stderr
    assert "zsre (scheme llama2): 2 records in, 2 kept" in built.stdout and "LLM: 0 calls" in built.stdout

    run = _cli(installed, work, "run", "--task", "zsre-fast", "--dataset", "pset", "--editor", "noop", "--limit", "1",
               "--out", "run", "--quiet")
    assert run.returncode == 0, run.stderr
    doc = json.loads((work / "run" / "results.json").read_text())
    assert doc["counts"] == {"records": 1, "ok": 1, "failed": 0}
    assert doc["provenance"]["git_hash"] is None                      # an installed wheel is no checkout

    after = sorted(p.relative_to(package_root) for p in package_root.rglob("*") if "__pycache__" not in p.parts)
    assert after == before, "a command wrote into the installed package"
