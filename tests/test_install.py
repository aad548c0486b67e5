"""The project installs anywhere: a wheel carries its SQL and static files and, installed (not editable) into a
fresh virtualenv, migrates and serves from another directory; requirements.lock pins every dependency in range."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import asyncpg
import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from graphql_api.db import migration_files, with_database
from tests.cli_process import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
STATIC = ROOT / "graphql_api" / "static"


def locked_versions() -> dict[str, str]:
    """Package name -> pinned version, from requirements.lock (each pin must carry hashes)."""
    pins: dict[str, str] = {}
    lines = (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines()
    for line, following in zip(lines, lines[1:] + [""]):
        if line and not line[0].isspace() and not line.startswith("#"):
            name, _, rest = line.partition("==")
            assert following.strip().startswith("--hash=sha256:"), f"requirements.lock: {name} has no hash"
            pins[canonicalize_name(name)] = rest.split(";")[0].split()[0]
    return pins


def test_the_lock_pins_every_dependency_within_pyproject_ranges() -> None:
    pins = locked_versions()
    wanted = [
        *PYPROJECT["project"]["dependencies"],
        *PYPROJECT["project"]["optional-dependencies"]["test"],
        *PYPROJECT["build-system"]["requires"],
    ]
    for text in wanted:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock: run make lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {requirement}: run make lock"
        )


def _project_files() -> list[str]:
    """The package data that must ship: every SQL file and every static file (GraphiQL's when installed here)."""
    package = ROOT / "graphql_api"
    files = [p for p in (package / "sql").rglob("*.sql")]
    if STATIC.is_dir():
        files += [p for p in STATIC.rglob("*") if p.is_file() and not p.name.startswith(".")]
    return sorted(str(p.relative_to(ROOT)) for p in files)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the working tree (a build in place would leave build/ in it)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "graphql_api", source / "graphql_api", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(work / "dist"), str(source)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert built.returncode == 0, f"setuptools {version('setuptools')} (make setup installs the locked one):\n{built.stderr}"
    (found,) = (work / "dist").glob("graphql_api-*.whl")
    return found


def test_the_wheel_carries_the_sql_and_static_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    expected = _project_files()
    assert len([f for f in expected if f.startswith("graphql_api/sql/migrations/")]) == len(migration_files())
    missing = [f for f in expected if f not in shipped]
    assert not missing, f"not in the wheel: {missing}"


@pytest.fixture
def installed(wheel: Path, tmp_path: Path) -> Path:
    """The python of a fresh virtualenv with the wheel installed (not editable); the dependencies come from this
    environment's site-packages through a .pth file, so nothing is downloaded and the checkout is not on the path."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "project_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True, timeout=120,
    )
    return python


def _admin(server_url: str, statement: str) -> None:
    async def run() -> None:
        admin = await asyncpg.connect(dsn=with_database(server_url, "postgres"))
        try:
            await admin.execute(statement)
        finally:
            await admin.close()

    asyncio.run(run())


@pytest.fixture
def empty_database(server_url: str) -> Iterator[str]:
    name = f"gqlapi_install_{secrets.token_hex(4)}"
    _admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server_url, name)
    finally:
        _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Installed:
    """`python -m graphql_api` of the installed package, run from an empty directory."""

    def __init__(self, python: Path, directory: Path, database_url: str):
        self.python = python
        self.directory = directory
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("PYTHONPATH", "GEMINI_API_KEY", "GEMINI_BASE_URL", "LOG_FORMAT", "ENVIRONMENT")}
        self.env.update(DATABASE_URL=database_url, DATA_DIR=str(directory / "data"), HOST="127.0.0.1",
                        PORT=str(self.port))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(self.python), "-m", "graphql_api", *args], cwd=self.directory, env=self.env,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        log = self.directory / "serve.log"
        with log.open("wb") as out:
            process = subprocess.Popen([str(self.python), "-m", "graphql_api", "serve"], cwd=self.directory,
                                       env=self.env, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{self.port}"

        def healthy() -> bool:
            assert process.poll() is None, f"serve exited {process.returncode}:\n{log.read_text()}"
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            return False

        try:
            wait_until(healthy, timeout=60, what=f"/healthz of the installed package\n{log.read_text()}")
            yield base
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_the_installed_package_migrates_and_serves_from_another_directory(
    installed: Path, empty_database: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli = Installed(installed, elsewhere, empty_database)
    located = subprocess.run([str(installed), "-c", "import graphql_api; print(graphql_api.__file__)"],
                             cwd=elsewhere, env=cli.env, capture_output=True, text=True, timeout=60, check=True)
    assert located.stdout.startswith(str(installed.parent.parent)), located.stdout  # the venv's copy, not the checkout

    migrated = cli.run("migrate")
    assert migrated.stdout.strip() == "migrations applied: " + ", ".join(
        f"{number:03d}_{name}" for number, name, _ in migration_files()
    )
    key = cli.run("create-api-key", "--workspace", "installed").stdout.strip().splitlines()[-1]

    with cli.serving() as base:
        answer = httpx.post(f"{base}/graphql", json={"query": "{ agents(first: 5) { edges { node { id } } } }"},
                            headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"data": {"agents": {"edges": []}}}
        assets = [f for f in _project_files() if f.startswith("graphql_api/static/vendor/")]
        if assets:  # GraphiQL's vendored files are served from the installed package
            asset = httpx.get(f"{base}/{assets[0].removeprefix('graphql_api/')}", timeout=30)
            assert asset.status_code == 200
            assert asset.content == (ROOT / assets[0]).read_bytes()
