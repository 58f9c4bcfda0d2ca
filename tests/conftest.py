import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["SDGUARD_NO_PROGRESS"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_random():
    """A tiny random Stable Diffusion built from configs (nothing downloaded)."""
    from sdguard.models import load_model

    return load_model("builtin:tiny-random")


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from sdguard.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return run


@pytest.fixture(scope="session")
def default_world(tmp_path_factory):
    """The world builtin:tiny was trained on (made once per test session)."""
    from sdguard.data import WORLD_DEFAULTS, make_world

    root = tmp_path_factory.mktemp("default_world") / "world"
    make_world(root, **WORLD_DEFAULTS)
    return root


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A 500-image world of seed 3 (made once per test session; tests that change it copy it)."""
    from sdguard.data import make_world

    root = tmp_path_factory.mktemp("small_world") / "world"
    make_world(root, seed=3, size=500)
    return root


@pytest.fixture(scope="session")
def other_world(tmp_path_factory):
    """A 300-image world written by tests/other_world.py, not make-world: ``(root, planted)``."""
    from other_world import write_other_world

    root = tmp_path_factory.mktemp("other_world") / "world"
    return root, write_other_world(root, n=300, seed=0)
