"""Inputs that lie or are absurd: one line on stderr and exit 2, before anything is built."""

import os
import signal

import pytest
import torch
from click.testing import CliRunner

from cli.main import cli
from tests.cli.helpers import assert_one_line_error
from tests.distill.lying import lying, tensors, write


def run(*args):
    signal.alarm(60)  # a FIFO opened for reading would block forever: fail instead
    try:
        return CliRunner().invoke(cli, [str(a) for a in args])
    finally:
        signal.alarm(0)


def _set(**fields):
    def edit(header):
        for key, value in fields.items():
            if value is ...:
                del header[key]
            else:
                header[key] = value

    return edit


def _dataset(**fields):
    def edit(header):
        header["dataset"].update(fields)

    return edit


HEADER_LIES = {
    "no arch": (_set(arch=...), "header field arch is null or missing"),
    "arch 5": (_set(arch=5), "header field arch is 5"),
    "arch_kwargs list": (_set(arch_kwargs=[1, 2]), "header field arch_kwargs is [1, 2]"),
    "dataset null": (_set(dataset=None), "header field dataset is null"),
    "float widths": (
        _set(arch_kwargs={"input_dim": 16, "hidden": [1e7, 1e7], "num_classes": 4}),
        "hidden must be a list of ints",
    ),
    "test_size 1e9": (
        _dataset(name="mnist1d", options={"test_size": 10**9}),
        "test_size=1000000000: must be an int in [10, 100000]",
    ),
    "train_size float": (_dataset(train_size=1e9), "header field dataset.train_size is"),
    "recipe": (_set(recipe={"epochs": "many"}), "header field recipe.epochs"),
}


@pytest.mark.parametrize("case", sorted(HEADER_LIES))
def test_evaluate_of_a_lying_header_is_one_line(tmp_path, case):
    edit, needle = HEADER_LIES[case]
    path = lying(tmp_path / "lying.safetensors", edit)
    result = run("evaluate", path)
    assert_one_line_error(result, needle)
    assert str(path) in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("text", ["[1,2,3]", "null"])
def test_evaluate_of_metadata_that_is_no_object(tmp_path, text):
    path = write(tmp_path / "lying.safetensors", tensors(), text)
    assert_one_line_error(run("evaluate", path), "not a JSON object")


def test_evaluate_of_400_terabytes_of_declared_weights_returns_at_once(tmp_path):
    edit = _set(arch_kwargs={"input_dim": 16, "hidden": [10**7, 10**7], "num_classes": 4})
    path = lying(tmp_path / "lying.safetensors", edit)
    assert_one_line_error(run("evaluate", path), "weights do not fit architecture mlp")


def test_evaluate_names_the_header_s_data_path_and_never_opens_a_fifo(tmp_path):
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    edit = _set(dataset={"name": "npz", "path": str(fifo), "sha256": "0" * 64, "options": {}})
    path = lying(tmp_path / "lying.safetensors", edit)
    result = run("evaluate", path)
    assert_one_line_error(result, f"{path} header field dataset.path {fifo}: a FIFO")
    assert "--data-file" not in result.stderr.split(":")[0]


def test_evaluate_with_a_fifo_as_cache_entry_regenerates_the_data(tmp_path, monkeypatch):
    from distill import cache
    from distill.checkpoint import tensors_sha256
    from distill.data import load_dataset
    from distill.models import build_model
    from tests.distill.lying import valid_header

    monkeypatch.setenv(cache.VARIABLE, str(tmp_path / "cache"))
    bundle = load_dataset("mnist1d")  # fills the cache
    (entry,) = (tmp_path / "cache").glob("mnist1d-*.npz")
    entry.unlink()
    os.mkfifo(entry)
    kwargs = {"input_dim": 40, "hidden": [8], "num_classes": 10}
    weights = build_model("mlp", **kwargs).state_dict()
    header = {**valid_header(weights), "arch_kwargs": kwargs, "dataset": bundle.description,
              "weights_sha256": tensors_sha256(weights)}  # fmt: skip
    result = run("evaluate", write(tmp_path / "t.safetensors", weights, header))
    assert result.exit_code == 0, result.output
    assert "(n=1000)" in result.output and entry.is_fifo()


def test_import_of_a_sparse_state_dict_is_one_line(tmp_path):
    state = {"1.weight": torch.eye(8, 16).to_sparse(), "1.bias": torch.zeros(8)}
    torch.save(state, tmp_path / "sparse.pt")
    result = run("import", tmp_path / "sparse.pt", "--model", "mlp", "--dataset", "synthetic",
                 "--out", tmp_path / "out.safetensors")  # fmt: skip
    assert_one_line_error(result, "entry '1.weight' is a sparse_coo tensor")
    assert not (tmp_path / "out.safetensors").exists()
