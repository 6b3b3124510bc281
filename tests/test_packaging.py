"""What pip is told about the package holds for the code: its dependency floors admit no
release the code cannot run on."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# PyTorch APIs that recnas calls and the release that introduced each (PyTorch's release
# notes): with an older torch, pip installed recnas happily and it failed at run time.
TORCH_APIS = {
    r"torch\.library\.custom_op\b": (2, 4),  # recnas/ops/token_attention.py, at import on CUDA builds
    r"torch\.library\.register_autograd\b": (2, 4),
    r"torch\.is_autocast_enabled\(\s*[^)\s]": (2, 4),  # the device_type argument (recnas/ops/norm.py)
    r"torch\.OutOfMemoryError\b": (2, 5),  # the device-agnostic OOM error (torch.cuda.OutOfMemoryError before)
}


def _floor(name: str) -> tuple[int, ...]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(rf"{name}\b", d))
    return tuple(int(p) for p in re.fullmatch(rf"{name}>=([\d.]+)", spec).group(1).split("."))


def test_torch_floor_admits_only_releases_with_the_apis_recnas_calls():
    source = {path: path.read_text() for path in (ROOT / "recnas").rglob("*.py")}
    floor = _floor("torch")
    used = {api: (version, [p.relative_to(ROOT).as_posix() for p, text in source.items() if re.search(api, text)]) for api, version in TORCH_APIS.items()}
    assert any(where for _, where in used.values()), "the table names none of the APIs in use: update it"
    too_old = {api: (version, where) for api, (version, where) in used.items() if where and floor < version}
    assert not too_old, f"pyproject.toml's torch>={'.'.join(map(str, floor))} admits releases without {too_old}"


def test_executor_ray_without_ray_names_an_install_that_works_outside_the_checkout(monkeypatch):
    """A user who installed recnas from a wheel was told `pip install -e '.[ray]'`, which
    installs whatever project the current folder holds (or fails: "does not appear to be a
    Python project"); the line names Ray itself, at the version the `ray` extra asks for."""
    import sys

    import pytest

    from recnas.errors import ConfigError
    from recnas.search.executors import connect_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError) as err:
        connect_ray()
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    assert extra == ["ray>=2.11"]
    assert f"pip install '{extra[0]}'" in str(err.value)
