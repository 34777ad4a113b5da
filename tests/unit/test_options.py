from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_gpuspawn.courses import Course, CourseImage
from jupyter_gpuspawn.options import OptionsError, options_from_form, validate_options

IMAGES = {"pytorch": "local/pytorch:1", "cpu": "local/cpu:1"}


def implicit(allowed=IMAGES, max_gpus=4, default_gpus=0):
    return Course.implicit(
        default_image="local/default:1",
        allowed_images=allowed,
        default_gpus=default_gpus,
        max_gpus=max_gpus,
        policy="exclusive",
        max_users_per_gpu=1,
    )


def check(options, allowed=IMAGES, max_gpus=4, default_gpus=0):
    return validate_options(
        options,
        visible=[implicit(allowed, max_gpus, default_gpus)],
        known_ids=[""],
        max_gpus=max_gpus,
    )


def test_defaults():
    choice = check({})
    assert (choice.image_key, choice.image, choice.gpus, choice.course.id) == (
        "",
        "local/default:1",
        0,
        "",
    )
    assert check(None, default_gpus=1).gpus == 1


def test_image_key_resolves_to_the_image():
    choice = check({"image": "pytorch", "gpus": 2})
    assert (choice.image_key, choice.image, choice.gpus) == ("pytorch", "local/pytorch:1", 2)


A = Course(
    id="a",
    title="A",
    images=(CourseImage("pt", "local/pt:1"), CourseImage("tf", "local/tf:1")),
    gpu_default=1,
    gpu_max=2,
    groups=("group-a",),
)
B = Course(
    id="b", title="B", images=(CourseImage("cpu", "local/cpu:1"),), gpu_max=0, groups=("group-b",)
)


def test_course_choice_and_bounds():
    choice = validate_options({"course": "a"}, visible=[A], known_ids=["a", "b"], max_gpus=8)
    assert (choice.course, choice.image, choice.gpus) == (A, "local/pt:1", 1)
    assert (
        validate_options(
            {"course": "a", "image": "tf", "gpus": 2}, visible=[A], known_ids=["a"], max_gpus=8
        ).image
        == "local/tf:1"
    )
    with pytest.raises(OptionsError, match="from 0 to 2"):
        validate_options({"course": "a", "gpus": 3}, visible=[A], known_ids=["a"], max_gpus=8)
    # fewer GPUs on the host than the course allows
    with pytest.raises(OptionsError, match="from 0 to 1"):
        validate_options({"course": "a", "gpus": 2}, visible=[A], known_ids=["a"], max_gpus=1)
    with pytest.raises(OptionsError, match="ask for 0"):
        validate_options({"course": "b", "gpus": 1}, visible=[B], known_ids=["b"], max_gpus=8)
    with pytest.raises(OptionsError, match="Choose one of: pt, tf"):
        validate_options({"course": "a", "image": "cpu"}, visible=[A], known_ids=["a"], max_gpus=8)


def test_course_of_others_is_forbidden_and_unknown_course_is_bad_request():
    with pytest.raises(OptionsError) as e:
        validate_options({"course": "b"}, visible=[A], known_ids=["a", "b"], max_gpus=8)
    assert e.value.status == 403 and "not enrolled" in str(e.value)
    with pytest.raises(OptionsError) as e:
        validate_options({"course": "zzz"}, visible=[A], known_ids=["a", "b"], max_gpus=8)
    assert e.value.status == 400 and "Your courses: a" in str(e.value)
    with pytest.raises(OptionsError) as e:
        validate_options({}, visible=[], known_ids=["a"], max_gpus=8)
    assert e.value.status == 403


def test_visibility_rules():
    assert A.visible_to("x", ["group-a"]) and not A.visible_to("x", ["group-b"])
    assert A.visible_to("x", [], is_admin=True)
    assert Course(id="c", title="C", images=A.images, users=("x",)).visible_to("x", [])
    assert Course(id="d", title="D", images=A.images).visible_to("anyone", [])


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
    assert (
        check({"image": "nvcr.io/nvidia/pytorch:24.08-py3"}, allowed="*").image
        == "nvcr.io/nvidia/pytorch:24.08-py3"
    )
    with pytest.raises(OptionsError):
        check({"image": "--privileged"}, allowed="*")


def test_long_values_are_not_echoed_whole():
    with pytest.raises(OptionsError) as e:
        check({"image": "x" * 10_000})
    assert len(str(e.value)) < 300


def test_form_fields_become_options():
    assert options_from_form({"image": ["cpu"], "gpus": ["2"], "junk": ["x"]}) == {
        "image": "cpu",
        "gpus": 2,
    }
    assert options_from_form({"gpus": ["2.5"]}) == {"gpus": "2.5"}  # refused later, with a message
    # only the chosen course's fields count
    form = {
        "course": ["b"],
        "image:a": ["pt"],
        "gpus:a": ["2"],
        "image:b": ["cpu"],
        "gpus:b": ["0"],
    }
    assert options_from_form(form) == {"course": "b", "image": "cpu", "gpus": 0}


@pytest.mark.parametrize(
    "typed", ["²", "٣", "１", "1²", "𝟐", "৩", "2\u200b", "0x1", "+1", "-1", "1_0", "12345"]
)
def test_gpu_counts_that_are_not_plain_ascii_digits_get_the_usual_400(typed):
    # "²".isdigit() is True but int("²") raises ValueError; int("٣") and int("１") are 3 and 1,
    # numbers nobody typed.
    options = options_from_form({"gpus": [typed]})
    assert options == {"gpus": typed}
    with pytest.raises(OptionsError) as e:
        check(options)
    assert e.value.status == 400
    assert str(e.value) == f"gpus must be a whole number from 0 to 4, got {typed!r}."


def test_ascii_gpu_counts_from_the_form_are_numbers():
    assert options_from_form({"gpus": [" 3 "]}) == {"gpus": 3}
    assert options_from_form({"gpus": ["0002"]}) == {"gpus": 2}
    assert check(options_from_form({"course": [""], "gpus:": ["4"]})).gpus == 4


@settings(max_examples=300, deadline=None)
@given(typed=st.text(max_size=6))
def test_any_typed_gpu_count_is_accepted_or_refused_with_a_400(typed):
    options = options_from_form({"gpus": [typed]})
    try:
        choice = check(options)
    except OptionsError as e:
        assert e.status == 400 and str(e).startswith("gpus must be a whole number from 0 to 4")
        return
    # str.strip: "\x1f" too, unlike int()
    assert choice.gpus == int(typed.strip()) and typed.strip().isascii()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=500, deadline=None)
@given(
    options=st.dictionaries(
        st.sampled_from(["gpus", "image", "course", "env", "", "GPUS"]) | st.text(max_size=20),
        json_values,
        max_size=4,
    )
)
def test_hostile_options_are_accepted_valid_or_refused_cleanly(options):
    try:
        choice = check(options)
    except OptionsError as e:
        assert str(e) and len(str(e)) < 500
        return
    # anything accepted is exactly within bounds and offered
    assert set(options) <= {"gpus", "image", "course"}
    assert (
        isinstance(choice.gpus, int) and not isinstance(choice.gpus, bool) and 0 <= choice.gpus <= 4
    )
    assert choice.image in set(IMAGES.values()) | {"local/default:1"}
