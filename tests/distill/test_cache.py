"""The dataset cache: used only when verified, regenerated otherwise, safe to fill twice."""

from __future__ import annotations

import json
import multiprocessing
import zipfile

import numpy as np
import pytest

import distill.data as data_module
from distill import cache
from distill.data import load_dataset

KEY = {"generator": "demo", "version": "1"}
NAMES = ("a", "b")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.VARIABLE, str(tmp_path))
    return tmp_path


def counting(values=(np.arange(5.0), np.arange(3))):
    calls = []

    def make():
        calls.append(1)
        return tuple(v.copy() for v in values)

    return make, calls


def entry(folder):
    (path,) = folder.glob("demo-*.npz")
    return path


def test_a_miss_generates_and_stores_a_hit_reads_it_back(folder):
    make, calls = counting()
    first = cache.cached_arrays(KEY, NAMES, make)
    second = cache.cached_arrays(KEY, NAMES, make)
    assert len(calls) == 1
    for a, b, expected in zip(first, second, (np.arange(5.0), np.arange(3)), strict=True):
        np.testing.assert_array_equal(a, expected)
        np.testing.assert_array_equal(b, expected)
    assert not list(folder.glob("*.tmp"))  # nothing left behind


def test_another_key_is_another_entry(folder):
    make, calls = counting()
    cache.cached_arrays(KEY, NAMES, make)
    cache.cached_arrays({**KEY, "version": "2"}, NAMES, make)
    assert len(calls) == 2 and len(list(folder.glob("demo-*.npz"))) == 2


def _rewrite(path, arrays, meta):
    with open(path, "wb") as handle:
        np.savez(handle, **arrays, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))


def test_a_tampered_entry_is_never_trusted_and_is_replaced(folder):
    make, calls = counting()
    cache.cached_arrays(KEY, NAMES, make)
    path = entry(folder)
    with np.load(path) as stored:
        meta = json.loads(bytes(stored["__meta__"]).decode())
        arrays = {name: stored[name] for name in NAMES}
    arrays["a"] = arrays["a"] + 1.0  # same names, same stored hashes: the data changed
    _rewrite(path, arrays, meta)
    result = cache.cached_arrays(KEY, NAMES, make)
    assert len(calls) == 2
    np.testing.assert_array_equal(result[0], np.arange(5.0))
    with np.load(path) as stored:  # the entry was replaced by a good one
        np.testing.assert_array_equal(stored["a"], np.arange(5.0))
    _rewrite(path, {n: arrays[n] for n in NAMES}, {**meta, "key": {**meta["key"], "seed": 9}})
    cache.cached_arrays(KEY, NAMES, make)
    assert len(calls) == 3  # a file whose recorded key differs is not used either


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing-array"])
def test_a_damaged_entry_is_regenerated(folder, damage):
    make, calls = counting()
    cache.cached_arrays(KEY, NAMES, make)
    path = entry(folder)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:50])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("a.npy", b"")
    result = cache.cached_arrays(KEY, NAMES, make)
    assert len(calls) == 2
    np.testing.assert_array_equal(result[1], np.arange(3))
    assert cache._read(path, {**KEY, "schema": cache.SCHEMA}, NAMES) is not None


def test_off_generates_every_time_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.VARIABLE, "off")
    make, calls = counting()
    cache.cached_arrays(KEY, NAMES, make)
    cache.cached_arrays(KEY, NAMES, make)
    assert len(calls) == 2 and cache.cache_dir() is None


def test_an_unwritable_folder_only_costs_the_saving(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv(cache.VARIABLE, str(blocker / "cache"))
    make, calls = counting()
    np.testing.assert_array_equal(cache.cached_arrays(KEY, NAMES, make)[0], np.arange(5.0))


BIG_KEY = {"generator": "demo", "big": True}


def _fill(folder: str, rounds: int) -> None:
    import os
    from pathlib import Path

    os.environ[cache.VARIABLE] = folder
    big = np.random.default_rng(0).standard_normal(2_000_000)  # ~16 MB: writes overlap
    for round_ in range(rounds):
        cache.cached_arrays(BIG_KEY, ("x",), lambda: (big,))
        if round_ < rounds - 1:
            for path in Path(folder).glob("demo-*.npz"):
                path.unlink(missing_ok=True)  # the next round writes again


def test_two_processes_filling_one_entry_leave_a_whole_one(folder):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_fill, args=(str(folder), 3)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    assert not list(folder.glob("*.tmp"))
    big = np.random.default_rng(0).standard_normal(2_000_000)
    make, calls = counting((big,))
    np.testing.assert_array_equal(cache.cached_arrays(BIG_KEY, ("x",), make)[0], big)
    assert calls == []  # the entry the two processes left is whole and verified


def test_mnist1d_is_generated_once_per_option_set(folder, monkeypatch):
    first = load_dataset("mnist1d")
    monkeypatch.setattr(data_module, "_make_mnist1d", lambda *a: pytest.fail("regenerated"))
    second = load_dataset("mnist1d")
    for a, b in zip(first.train.tensors + first.test.tensors,
                    second.train.tensors + second.test.tensors, strict=True):  # fmt: skip
        assert (a == b).all()
    assert len(list(folder.glob("mnist1d-*.npz"))) == 1


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_an_entry_that_is_no_regular_file_is_a_miss_left_in_place(folder, kind):
    import os
    import signal
    import stat

    path = cache._entry_path(folder, {**KEY, "schema": cache.SCHEMA})
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    make, calls = counting()
    signal.alarm(20)  # a blocking open of the FIFO would hang here: fail instead
    try:
        first = cache.cached_arrays(KEY, NAMES, make)
        cache.cached_arrays(KEY, NAMES, make)
    finally:
        signal.alarm(0)
    np.testing.assert_array_equal(first[0], np.arange(5.0))
    assert len(calls) == 2  # generated each time, never read from the FIFO
    mode = os.lstat(path).st_mode
    assert stat.S_ISFIFO(mode) if kind == "fifo" else stat.S_ISDIR(mode)
