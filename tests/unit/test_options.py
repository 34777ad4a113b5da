from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_gpuspawn.options import OptionsError, SpawnChoice, options_from_form, validate_options

IMAGES = {"pytorch": "local/pytorch:1", "cpu": "local/cpu:1"}


def check(options, allowed=IMAGES, max_gpus=4, default_gpus=0):
    return validate_options(options, allowed_images=allowed, default_image="local/default:1",
                            default_gpus=default_gpus, max_gpus=max_gpus)


def test_defaults():
    assert check({}) == SpawnChoice(image_key="", image="local/default:1", gpus=0)
    assert check(None, default_gpus=1).gpus == 1


def test_image_key_resolves_to_the_image():
    assert check({"image": "pytorch", "gpus": 2}) == SpawnChoice("pytorch", "local/pytorch:1", 2)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"gpus": -1}, "from 0 to 4"),
        ({"gpus": 5}, "from 0 to 4"),
        ({"gpus": "2"}, "whole number"),
        ({"gpus": 2.0}, "whole number"),
        ({"gpus": True}, "whole number"),
        ({"image": "local/pytorch:1"}, "not offered here. Choose one of: cpu, pytorch"),
        ({"image": 3}, "name of one of the offered images"),
        ({"env": {"A": "b"}}, "Unknown spawn option(s) 'env'"),
        ({"course": "x"}, "no courses"),
    ],
)
def test_bad_options_say_what_to_fix(options, message):
    with pytest.raises(OptionsError) as e:
        check(options)
    assert message in str(e.value)


def test_default_deny_when_no_images_are_offered():
    with pytest.raises(OptionsError, match="not allowed"):
        check({"image": "pytorch"}, allowed={})


def test_any_image_only_accepts_image_references():
    assert check({"image": "nvcr.io/nvidia/pytorch:24.08-py3"}, allowed="*").image == "nvcr.io/nvidia/pytorch:24.08-py3"
    with pytest.raises(OptionsError):
        check({"image": "--privileged"}, allowed="*")


def test_long_values_are_not_echoed_whole():
    with pytest.raises(OptionsError) as e:
        check({"image": "x" * 10_000})
    assert len(str(e.value)) < 300


def test_form_fields_become_options():
    assert options_from_form({"image": ["cpu"], "gpus": ["2"], "junk": ["x"]}) == {"image": "cpu", "gpus": 2}
    assert options_from_form({"gpus": ["2.5"]}) == {"gpus": "2.5"}  # refused later, with a message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=500, deadline=None)
@given(options=st.dictionaries(st.sampled_from(["gpus", "image", "course", "env", "", "GPUS"]) | st.text(max_size=20),
                               json_values, max_size=4))
def test_hostile_options_are_accepted_valid_or_refused_cleanly(options):
    try:
        choice = check(options)
    except OptionsError as e:
        assert str(e) and len(str(e)) < 500
        return
    # anything accepted is exactly within bounds and offered
    assert set(options) <= {"gpus", "image", "course"}
    assert isinstance(choice.gpus, int) and not isinstance(choice.gpus, bool) and 0 <= choice.gpus <= 4
    assert choice.image in set(IMAGES.values()) | {"local/default:1"}
