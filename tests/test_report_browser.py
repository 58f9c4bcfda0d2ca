"""The HTML report renders in a real browser (headless Chromium) without console errors."""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian package: chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


def _render(html_path, tmp_path, height=2400):
    shot = tmp_path / "shot.png"
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                           f"--window-size=1200,{height}", html_path.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    return shot, proc.stderr


def test_generation_report_renders_plots_and_grids(tmp_path, monkeypatch):
    from sdguard.audit.generation_replication import audit_generations
    from sdguard.data import make_world

    monkeypatch.setenv("SDGUARD_CACHE", str(tmp_path / "cache"))
    make_world(tmp_path / "world", seed=5, size=500)
    audit_generations("builtin:tiny-random", str(tmp_path / "world"), out=str(tmp_path / "audit"), n=8, batch_size=8,
                      steps=2, top_clusters=1, controls=1)
    html = tmp_path / "audit" / "report.html"
    shot, log = _render(html, tmp_path, height=6000)  # the page leads with "What is replicated"; plots further down
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    img = np.asarray(Image.open(shot).convert("RGB"), np.int32)
    assert img.shape[1] == 1200
    # the page is not blank: plots and grids put many distinct colours on it
    colours = len(np.unique(img.reshape(-1, 3)[::7], axis=0))
    assert colours > 200, colours
    # plots are drawn in colour (matplotlib's bars), not only black text on white
    saturated = np.abs(img[..., 0] - img[..., 2]) > 60
    assert saturated.mean() > 0.002
