"""The dependency lock: pyproject.toml, uv.lock and requirements.lock agree, and this environment is the lock.

bin/setup installs requirements.lock (hashes, every package); bin/lock refreshes both files. These tests fail when
someone edits pyproject.toml without refreshing the lock, hand-edits one of the two lock files, or when the
environment the suite runs in drifted from what the lock says (CONVENTIONS.md, "Dependencies and the lock").
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
EXPORT = ["export", "--locked", "--all-extras", "--group", "build", "--no-emit-project", "--no-header",
          "--format", "requirements.txt", "-q"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^ ;\\]+)(?:\s*;\s*([^\\]+?))?\s*\\?$")


def _uv(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    assert UV, "uv is a dev dependency (pyproject.toml); bin/setup installs it from the lock"
    return subprocess.run([UV, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"UV_OFFLINE": "1", "UV_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"})


def _pins() -> dict[str, str]:
    """requirements.lock's pins that apply to this interpreter and platform, by canonical name."""
    from packaging.markers import Marker

    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        match = PIN.match(line)
        if match and (not match[3] or Marker(match[3]).evaluate()):
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def test_uv_lock_agrees_with_pyproject():
    result = _uv("lock", "--check")
    assert result.returncode == 0, f"pyproject.toml changed without `bin/lock`:\n{result.stderr}"


def test_the_check_fails_when_pyproject_asks_for_what_the_lock_does_not_hold(tmp_path):
    """The check above can fail: a requirement the lock does not satisfy is reported, offline, without resolving."""
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"duckdb==2.0.1"', '"duckdb==1.1.3"'))
    result = _uv("lock", "--check", cwd=tmp_path)
    assert result.returncode != 0
    assert "duckdb" in result.stderr


def test_requirements_lock_is_the_export_of_uv_lock():
    result = _uv(*EXPORT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (REPO / "requirements.lock").read_text(), \
        "requirements.lock is not uv.lock's export: run `bin/lock`"


def test_every_pin_has_a_hash_and_every_package_is_pinned():
    text = (REPO / "requirements.lock").read_text()
    entries = [e for e in re.split(r"\n(?=[A-Za-z0-9])", text) if e.strip() and not e.startswith("#")]
    assert len(entries) > 100
    for entry in entries:
        head = entry.splitlines()[0]
        assert PIN.match(head), f"not an exact pin: {head}"
        assert "--hash=sha256:" in entry, f"no hash: {head}"


def test_this_environment_is_the_lock():
    """What the suite runs on is what requirements.lock says, package for package (pip and the project aside)."""
    pins = _pins()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {name: (version, installed.get(name)) for name, version in pins.items() if installed.get(name) != version}
    assert not wrong, f"installed versions differ from the lock (want, have): {wrong}; run bin/setup"
    extra = set(installed) - set(pins) - {"pip", "reddit-lakehouse"}
    assert not extra, f"installed but not in the lock: {sorted(extra)}"

