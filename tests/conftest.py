"""Shared fixtures: tiny synthetic Phi-Net sets in the three on-disk formats."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crackcascade.cli import CrackcascadeCLI

from .fake_data import MASK_FORMATS, PHINET_FORMATS, crack_set, phinet_set

ROOT = Path(__file__).resolve().parents[1]
CONF = Path(__file__).resolve().parent / "conf"
SHARED_DATA = ROOT.parent / "shared" / "data"
FORMATS = PHINET_FORMATS


@pytest.fixture(scope="session")
def phinet_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny synthetic Phi-Net root per format (all eight tasks, 64x64 images)."""
    roots = {}
    for fmt in FORMATS:
        root = tmp_path_factory.mktemp(f"phinet_{fmt}")
        roots[fmt] = phinet_set(root, fmt)
    return roots


@pytest.fixture(params=FORMATS)
def phinet_format(request: pytest.FixtureRequest, phinet_roots: dict[str, Path]) -> tuple[str, Path]:
    """(format, root) for each of the three formats."""
    return request.param, phinet_roots[request.param]


@pytest.fixture(scope="session")
def crack_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny synthetic crack-mask sets (pixel and object scales) as mask pairs and as COCO."""
    roots = {}
    for fmt in MASK_FORMATS:
        root = tmp_path_factory.mktemp(f"cracks_{fmt}")
        roots[fmt] = crack_set(root, fmt)
    return roots


@pytest.fixture
def cli_runs(monkeypatch: pytest.MonkeyPatch) -> list[CrackcascadeCLI]:
    """Every command ``main([...])`` runs in the test, appended once its subcommand has finished.

    Each entry is the CLI itself, so a test can check what a config resolved to (``.model``,
    ``.datamodule``, ``.trainer``, ``.config``) and what the run did to them.
    """
    runs: list[CrackcascadeCLI] = []

    def finished(cli: CrackcascadeCLI) -> None:
        runs.append(cli)

    for subcommand in ("fit", "validate", "test", "predict"):
        monkeypatch.setattr(CrackcascadeCLI, f"after_{subcommand}", finished, raising=False)
    return runs


def wandb_inspect(run: Path, *, records: bool = False) -> Any:
    """An offline W&B run folder read back with wandb's own reader (``wandb leet inspect --json``).

    wandb 0.31 keeps an offline run's config and summary only in its ``run-<id>.wandb`` log
    (``files/`` holds the media). Returns the run's state, config, tags and summary, or with
    ``records`` every record of the log.
    """
    command = [str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(run)]
    done = subprocess.run(command + ([] if records else ["--summary"]), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()] if records else json.loads(done.stdout)


# ----------------------------------------------------------------------------- headless Chromium


def _working_browser() -> str | None:
    for name in ("chromium", "chromium-browser"):
        exe = shutil.which(name)
        if exe is None:
            continue
        try:  # Ubuntu's chromium-browser may be a snap shim that does not run.
            done = subprocess.run([exe, "--version"], capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return exe
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a working Chromium; installs Debian's ``chromium`` package when missing, else skips."""
    exe = _working_browser()
    if exe is not None:
        return exe
    if os.environ.get("CRACKCASCADE_NO_APT"):
        pytest.skip("chromium not found and CRACKCASCADE_NO_APT is set")
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("chromium not found and it cannot be installed (needs apt-get as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "--no-install-recommends", "chromium"]
    error = ""
    for commands in ([install], [[apt, "update", "-q"], install]):  # retry after refreshing the lists
        try:
            for command in commands:
                done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
                if done.returncode != 0:
                    error = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                    break
            else:
                exe = _working_browser()
                if exe is not None:
                    return exe
        except subprocess.TimeoutExpired as err:
            error = f"{' '.join(err.cmd)} timed out"
    pytest.skip(f"chromium not found and apt-get could not install it: {error}")


def run_chromium(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        exe,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within 120 s: {' '.join(command)}")
    except subprocess.CalledProcessError as err:
        pytest.fail(f"chromium failed ({err.returncode}): {err.stderr[-2000:]}")


def decoded_images(exe: str, page: Path, profile: Path) -> tuple[str, int]:
    """The DOM of ``page`` rendered by headless Chromium and how many of its images decoded."""
    probe = page.with_name(f"{page.stem}.probe.html")
    script = (
        "<script>window.addEventListener('load',()=>{const ok=[...document.images]"
        ".filter(i=>i.complete&&i.naturalWidth>0).length;document.body.dataset.decoded=ok;});</script>"
    )
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", script + "</body>"), encoding="utf-8")
    dom = run_chromium(exe, profile, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()).stdout
    probe.unlink()
    found = re.search(r'data-decoded="(\d+)"', dom)
    return dom, int(found.group(1)) if found else -1
