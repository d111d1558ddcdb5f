"""The project's shape (W2 2/7): small modules, the fakes outside the product, the gateway behind its interface,
one HTTP plumbing for every outside system."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 500
SKIP_PARTS = {".venv", "node_modules", "migrations", "tests", ".git", "staticfiles", "test-artifacts"}


def project_modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if not SKIP_PARTS & set(p.relative_to(ROOT).parts))


def test_there_are_modules_to_check():
    names = {p.relative_to(ROOT).as_posix() for p in project_modules()}
    assert {"instances/routing.py", "chips/models.py", "sandbox/evolution/fake.py", "bench/route.py"} <= names


def test_no_module_outside_migrations_and_tests_is_over_500_lines():
    long = {p.relative_to(ROOT).as_posix(): n for p in project_modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_fakes_are_not_inside_the_product():
    assert not (ROOT / "chipfarm" / "sandbox").exists()
    assert (ROOT / "sandbox" / "evolution").is_dir()


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_nothing_outside_instances_imports_the_evolution_client():
    offenders = {}
    for path in project_modules():
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("instances", "sandbox"):  # the gateway's home, and the fake of the real Evolution
            continue
        bad = [name for name in _imports(path)
               if name.startswith("instances.gateway.evolution") or name.rsplit(".", 1)[-1] in
               ("EvolutionGateway", "EvolutionClient")]
        if bad:
            offenders[rel.as_posix()] = bad
    assert offenders == {}


def test_every_outside_system_goes_through_the_one_http_plumbing():
    """Only common/http.py builds a synchronous httpx client; each system's client subclasses its HttpClient."""
    builders = {}
    for path in project_modules():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("sandbox/", "bench/")) or rel == "common/http.py":
            continue
        text = path.read_text()
        calls = [c for c in ("httpx.Client(", "httpx.get(", "httpx.post(", "httpx.request(") if c in text]
        if calls:
            builders[rel] = calls
    assert builders == {}
    clients = {"activation/client.py", "chipfarm/client.py", "chips/client.py", "outbox/client.py",
               "instances/gateway/evolution/client.py"}
    for rel in clients:
        tree = ast.parse((ROOT / rel).read_text())
        bases = {ast.unparse(b) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for b in node.bases}
        assert "HttpClient" in bases, rel


@pytest.mark.skipif(shutil.which("duplicates") is None, reason="the workplace's `duplicates` tool is not installed")
def test_duplicates_finds_no_repeated_http_plumbing_between_the_clients():
    clients = ["activation/client.py", "chipfarm/client.py", "chips/client.py", "outbox/client.py",
               "instances/gateway/evolution/client.py", "common/http.py"]
    out = subprocess.run(["duplicates", "--repo", str(ROOT), "--most", "200", "--seconds", "120"],
                         capture_output=True, text=True, timeout=180, check=False).stdout
    rows = [line for line in out.splitlines() if line.startswith("D")]
    between = [row for row in rows if sum(c in row for c in clients) >= 2]
    assert between == [], "\n".join(between)
