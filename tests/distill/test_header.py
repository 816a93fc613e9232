"""The checkpoint header as a schema: every lie is one DistillInputError naming the field."""

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.checkpoint import load_checkpoint
from distill.errors import DistillInputError
from distill.header import validate_header
from tests.distill.lying import lying, tensors, valid_header, write

VALID = valid_header(tensors())


def _set(field, value):
    """An edit that sets the dotted ``field`` to ``value`` (deletes it for ``...``)."""

    def edit(header):
        *parents, last = field.split(".")
        for part in parents:
            header = header[part]
        if value is ...:
            del header[last]
        else:
            header[last] = value

    return edit


LIES = [
    ("arch", ..., "header field arch is null or missing"),
    ("arch", 5, "header field arch is 5"),
    ("arch", "nonet", 'header field arch is "nonet"'),
    ("arch_kwargs", [1, 2], "header field arch_kwargs is [1, 2]"),
    ("arch_kwargs", ..., "header field arch_kwargs is null"),
    ("arch_kwargs.hidden", [1e7, 1e7], "mlp: hidden must be a list of ints"),
    ("arch_kwargs.hidden", [8] * 2000, "at most 1024"),
    ("arch_kwargs.input_dim", "16", "input_dim must be an int"),
    ("arch_kwargs.arch", 1, "no keyword argument 'arch'"),
    ("model_source", "x.py", "header field model_source is"),
    ("dataset", ..., "header field dataset is null"),
    ("dataset", [1], "header field dataset is [1]"),
    ("dataset.name", 5, "header field dataset.name is 5"),
    ("dataset.name", "imagenet", "header field dataset.name"),
    ("dataset.options", [], "header field dataset.options is []"),
    ("dataset.options", {"n_test": 10**9}, "n_test=1000000000: must be an int in [1, 1000000]"),
    ("dataset.options", {"n_test": -1}, "n_test=-1"),
    ("dataset.options", {"dim": 1.5}, "dim=1.5: must be an int"),
    ("dataset.options", {"dim": 10_000, "n_train": 1_000_000}, "at most 100,000,000"),
    ("dataset.options", {"colour": 1}, "has no option 'colour'"),
    ("dataset.train_size", 1e9, "header field dataset.train_size is 1000000000.0"),
    ("dataset.train_size", -3, "header field dataset.train_size is -3"),
    ("dataset.label_noise", 2, "header field dataset.label_noise is 2"),
    ("dataset.label_noise", 10**400, "header field dataset.label_noise is 1000"),
    ("kd", {"alpha": [1]}, "header field kd.alpha is [1]"),
    ("dataset.augment", "yes", "header field dataset.augment"),
    ("dataset.root", 7, "header field dataset.root is 7"),
    ("recipe", "sgd", 'header field recipe is "sgd"'),
    ("recipe.epochs", 10**12, "header field recipe.epochs is 1000000000000"),
    ("recipe.milestones", "10", "header field recipe.milestones"),
    ("recipe.lr", None, "header field recipe.lr is null"),
    ("seed", "zero", 'header field seed is "zero"'),
    ("seed", 2**70, "header field seed"),
    ("generation", -1, "header field generation is -1"),
    ("generation", None, "header field generation is null"),
    ("parent_sha256", ["ab"], "header field parent_sha256[0]"),
    ("aligned_to", "teacher", "header field aligned_to"),
    ("alignment", 3.5, "header field alignment is 3.5"),
    ("metrics", {"test_accuracy": "high"}, "header field metrics.test_accuracy"),
    ("kd", {"temperature": "4"}, "header field kd.temperature"),
    ("weights_sha256", 5, "header field weights_sha256 is 5"),
    ("schema", "1", 'unsupported checkpoint schema "1"'),
    ("schema", True, "unsupported checkpoint schema true"),
]


@pytest.mark.parametrize(
    ("field", "value", "needle"), LIES, ids=[f"{f}={v!r}"[:40] for f, v, _ in LIES]
)
def test_a_lying_field_is_named(tmp_path, field, value, needle):
    path = lying(tmp_path / "lying.safetensors", _set(field, value))
    with pytest.raises(DistillInputError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert str(path) in message and needle in message and "\n" not in message


@pytest.mark.parametrize("text", ["[1,2,3]", "null", "5", '"x"'])
def test_metadata_that_is_no_object(tmp_path, text):
    path = write(tmp_path / "lying.safetensors", tensors(), text)
    with pytest.raises(DistillInputError, match="header metadata is .*, not a JSON object"):
        load_checkpoint(path)


def test_the_valid_header_is_accepted_and_unchanged():
    header = copy.deepcopy(VALID)
    assert validate_header(header, "x") == VALID


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**30)])
    | st.floats()
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value, prefix=()):
    """Every (path of keys) inside nested dicts of ``value``."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))


PATHS = list(_paths(VALID))


def _only_input_errors(header):
    try:
        validate_header(header, "random.safetensors")
    except DistillInputError as err:
        assert "\n" not in str(err)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_any_json_is_a_header_or_an_input_error(value):
    _only_input_errors(value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(PATHS), JSON), min_size=1, max_size=3))
def test_a_valid_header_with_fields_set_to_random_json(changes):
    header = copy.deepcopy(VALID)
    for path, value in changes:
        target = header
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                break
            target = target[key]
        else:
            target[path[-1]] = value
    _only_input_errors(header)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["mnist1d", "digits", "synthetic", "cifar10", "npz",
                                        "code"]), JSON, max_size=1), JSON)  # fmt: skip
def test_random_dataset_options_and_kwargs(options, kwargs):
    header = copy.deepcopy(VALID)
    for name, value in options.items():
        header["dataset"] = {**header["dataset"], "name": name, "options": value}
    header["arch_kwargs"] = kwargs
    _only_input_errors(header)
