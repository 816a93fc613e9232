"""What `make test` installs: the hf extra, pinned, and never the bench extra's torchvision.

PyPI's torchvision 0.28.0 is a CUDA build that cannot load beside the CPU torch 2.13.0,
and transformers imports it whenever it is installed: the test venv must not get it.
"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _extras() -> dict[str, list[str]]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    section = config["options.extras_require"]
    return {name: section[name].split() for name in section}


def _target(name: str) -> str:
    """The recipe of a Makefile target and of the stamp file it depends on."""
    text = (ROOT / "Makefile").read_text()
    stamp = re.search(rf"^{name}: (\S+)", text, flags=re.M).group(1)
    rule = {"venv": "$(STAMP)"}.get(stamp, stamp)
    return re.search(rf"^{re.escape(rule)}:.*?(?=^\S|\Z)", text, flags=re.M | re.S).group(0)


def test_make_test_installs_the_hf_and_lightning_extras_and_not_the_bench_extra():
    recipe = _target("venv")
    assert "'.[test,hf,lightning]'" in recipe and "bench" not in recipe
    assert "$(BENCH_VENV)" in _target("bench")  # the peers get a venv of their own


def test_the_hf_extra_is_transformers_pinned_with_its_dependencies():
    extras = _extras()
    assert extras["hf"] == ["transformers"]
    pins = dict(
        line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )  # fmt: skip
    for name in ("transformers", "huggingface_hub", "tokenizers", "safetensors", "regex"):
        assert name in pins, name
    assert extras["lightning"] == ["lightning"]
    for name in ("lightning", "pytorch-lightning", "lightning-utilities", "torchmetrics"):
        assert name in pins, name
    installed_by_test = {*extras["test"], *extras["hf"]}
    assert not installed_by_test & {"torchvision", "backpack-for-pytorch", "curvlinops-for-pytorch"}
