"""Course files as YAML text: the page's YAML view in, the file's text out, comments kept.

merge_yaml rewrites only what changed, so the comments an admin wrote in a course file survive an
instructor's edit of the title: unchanged top-level keys keep their exact text, changed ones are
merged in place with ruamel.yaml. Every result is read back the way the hub reads course files
(PyYAML, datafiles.parse_text) and must equal what was asked for; ruamel.yaml is configured to write
what PyYAML reads the same way (YAML 1.1 booleans, floats, line breaks). Pure: no file I/O.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
import warnings
from collections.abc import Sequence
from difflib import SequenceMatcher

from .courses import COURSE_SCHEMA, CourseError
from .datafiles import MAX_FILE_BYTES, DataFileError, parse_text

KIND = "course files"
# Longer than any line a course needs: ruamel.yaml would otherwise fold long strings over several
# lines.
YAML_WIDTH = 100_000


# ---- YAML ----------------------------------------------------------------------------------------


def parse_yaml_text(text: str, name: str) -> dict:
    """A course as typed in the page's YAML view, read exactly as a course file is read (size cap,
    no anchors or aliases). Raises courses.CourseError([f"{name}: ..."])."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise CourseError(
            [f"{name}: is larger than {MAX_FILE_BYTES // 1024} KiB, the limit for {KIND}"]
        )
    try:
        data = parse_text(text, as_json=False, kind=KIND)
    except DataFileError as e:
        raise CourseError([f"{name}: {e}"]) from None
    if not isinstance(data, dict):
        raise CourseError(
            [f"{name}: expected a mapping of keys (id, title, images, …) at the top level"]
        )
    return data


def same_value(a, b) -> bool:
    """Equal, and of the same types all the way down: True is not 1, 1 is not 1.0 (the file should
    say what the page said)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return len(a) == len(b) and all(k in b and same_value(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=False))
    return type(a) is type(b) and a == b


@functools.cache
def _ruamel_classes():
    """ruamel.yaml's resolvers, representer and emitter, made to read and write the way PyYAML
    (which the hub reads course files with) does. ruamel.yaml alone writes YAML 1.2, which PyYAML
    reads differently: 'yes' unquoted (True to PyYAML), 1e+16 (a string to PyYAML), 0? in a flow
    mapping (an error to PyYAML). Imported lazily: only the course pages need ruamel.yaml."""
    import yaml.emitter
    import yaml.resolver
    from ruamel.yaml.emitter import Emitter
    from ruamel.yaml.error import MantissaNoDotYAML1_1Warning
    from ruamel.yaml.representer import RoundTripRepresenter
    from ruamel.yaml.resolver import VersionedResolver
    from ruamel.yaml.resolver import implicit_resolvers as ruamel_resolvers

    # "1e3" in a file: ruamel.yaml warns that YAML 1.1 wants "1.0e+3". It is a string to PyYAML, and
    # kept as such.
    warnings.filterwarnings("ignore", category=MantissaNoDotYAML1_1Warning)

    # first character -> [(tag, regexp)], as PyYAML's SafeLoader resolves plain scalars (YAML 1.1,
    # where 'y' and 'n' are strings)
    read_table = {
        first: list(items)
        for first, items in yaml.resolver.Resolver.yaml_implicit_resolvers.items()
    }
    # for writing, YAML 1.2's resolvers too: a string either reader takes for a number or a bool
    # ('1e3') is quoted, so other tools read the file as the hub does. PyYAML's come first: they
    # give non-strings their tags.
    write_table = {first: list(items) for first, items in read_table.items()}
    for versions, tag, regexp, firsts in ruamel_resolvers:
        if (1, 2) in versions:
            for first in firsts:
                write_table.setdefault(first, []).append((tag, regexp))
    # (neither has resolvers for any first character, key None, which ruamel.yaml would append to
    # the lists)
    assert None not in read_table and None not in write_table

    class ReadResolver(VersionedResolver):
        """Plain scalars read as PyYAML reads them."""

        @property
        def processing_version(self):
            return (1, 1)

        @property
        def versioned_resolver(self):
            return read_table

    class WriteResolver(ReadResolver):
        """Strings quoted where PyYAML, or a YAML 1.2 reader, would take them for something else."""

        @property
        def versioned_resolver(self):
            return write_table

    class PyYAMLEmitter(Emitter):
        """A scalar style is used only where both ruamel.yaml's and PyYAML's emitters allow it
        (double quotes always are): a plain '0?' in a flow mapping, or a control character in a |
        block, would not read back."""

        def analyze_scalar(self, scalar):
            analysis = super().analyze_scalar(scalar)
            # uses only self.allow_unicode
            strict = yaml.emitter.Emitter.analyze_scalar(self, scalar)
            for flag in (
                "allow_flow_plain",
                "allow_block_plain",
                "allow_single_quoted",
                "allow_block",
            ):
                setattr(analysis, flag, getattr(analysis, flag) and getattr(strict, flag))
            return analysis

    class PyYAMLRepresenter(RoundTripRepresenter):
        """Floats PyYAML reads back as floats: 1e16 is written 1.0e+16 (PyYAML reads '1e+16' as a
        string)."""

    def represent_float(representer, value):
        if math.isnan(value):
            text = ".nan"
        elif math.isinf(value):
            text = ".inf" if value > 0 else "-.inf"
        else:
            text = repr(value).lower()
            if "." not in text:
                text = text.replace("e", ".0e", 1) if "e" in text else text + ".0"
        return representer.represent_scalar("tag:yaml.org,2002:float", text)

    # on the subclass: ruamel's own stays as it is
    PyYAMLRepresenter.add_representer(float, represent_float)
    return ReadResolver, WriteResolver, PyYAMLRepresenter, PyYAMLEmitter


def _reader():
    """A round-trip ruamel.yaml that reads plain scalars as PyYAML does (see _ruamel_classes)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.Resolver = _ruamel_classes()[0]
    yaml.preserve_quotes = True  # "local/img:1" stays quoted where a neighbouring value changed
    return yaml


def _yaml(mapping: int = 2, offset: int = 2):
    """A round-trip ruamel.yaml that writes what PyYAML reads back as written (see
    _ruamel_classes)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    _, yaml.Resolver, yaml.Representer, yaml.Emitter = _ruamel_classes()
    yaml.width = YAML_WIDTH
    yaml.allow_unicode = True
    yaml.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    return yaml


def _dump(yaml, data) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    text = out.getvalue()
    # After a final "|+" block ruamel.yaml ends the document ("..."): the file may go on after this
    # part
    return text[:-4] if text.endswith("\n...\n") else text


# Characters a literal block (|) cannot hold as they are, though ruamel.yaml writes them there:
# control characters, CR, BOM and the Unicode line breaks (YAML's non-printable set, plus those).
_NOT_IN_BLOCK = re.compile(
    "[^\t\n\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)


def _fresh(value, like=None, quoted: bool = False):
    """``value`` as ruamel.yaml nodes: block style, multi-line strings as literal blocks (|), except
    where ``like`` (the value it replaces, or a sibling) was written in flow style ({a: 1}, [a, b]):
    then the same style.
    ``quoted``: every string in double quotes, with escapes (the style that represents any
    string)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    from ruamel.yaml.scalarstring import (
        DoubleQuotedScalarString,
        LiteralScalarString,
        PlainScalarString,
    )

    flow = bool(getattr(like, "fa", None) and like.fa.flow_style())
    if isinstance(value, dict):
        node = CommentedMap(
            (k, _fresh(v, like.get(k) if isinstance(like, dict) else None, quoted))
            for k, v in value.items()
        )
    elif isinstance(value, list):
        item_like = like[0] if isinstance(like, list) and like else None
        node = CommentedSeq(_fresh(v, item_like, quoted) for v in value)
    elif isinstance(value, str):
        # NEL and the Unicode line/paragraph separators are line breaks to a YAML reader: the
        # emitters write them raw in single quotes or blocks, where PyYAML folds them into a space.
        # Only double quotes escape them.
        if quoted or any(c in value for c in "\x85\u2028\u2029"):
            return DoubleQuotedScalarString(value)
        if "\n" in value and value.strip() and not _NOT_IN_BLOCK.search(value):
            return LiteralScalarString(value)
        # PlainScalarString, not str: assigning a str where the file had a | block would keep the
        # block style
        return PlainScalarString(value)
    else:
        return value
    if flow:
        node.fa.set_flow_style()
    else:
        node.fa.set_block_style()
    return node


def _merge(parent, key, view, new) -> None:
    """Make ``parent[key]`` (ruamel.yaml nodes read from the file) say ``new``, changing as little
    as possible.
    ``view`` is the same part of the file as PyYAML reads it: a value is kept when PyYAML reads it
    as ``new`` (what ruamel.yaml makes of it does not matter, the hub reads the file with
    PyYAML)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if same_value(view, new):
        return
    old = parent[key]
    if (
        isinstance(old, CommentedMap)
        and isinstance(view, dict)
        and isinstance(new, dict)
        and len(old) == len(view)
    ):
        # PyYAML's key -> ruamel.yaml's key: same document order
        keys = dict(zip(view, old, strict=False))
        for view_key, old_key in keys.items():
            if view_key not in new:
                del old[old_key]
        for k, v in new.items():
            if k in keys:
                _merge(old, keys[k], view[k], v)
            else:
                old[k] = _fresh(v)
    elif (
        isinstance(old, CommentedSeq)
        and isinstance(view, list)
        and isinstance(new, list)
        and len(old) == len(view)
    ):
        _merge_list(old, view, new)
    else:
        parent[key] = _fresh(new, old)


def _merge_list(old, view: list, new: list) -> None:
    """Items that stay keep their place and comments; changed items are merged in place, others
    inserted or deleted (an added mount does not rewrite the other mounts' lines)."""
    canon = [json.dumps(v, sort_keys=True, default=repr) for v in view]
    matcher = SequenceMatcher(
        None, canon, [json.dumps(v, sort_keys=True, default=repr) for v in new], autojunk=False
    )
    like = old[0] if len(old) else None
    # from the end: earlier indices stay valid
    for tag, i1, i2, j1, j2 in reversed(matcher.get_opcodes()):
        if tag == "equal":
            continue
        paired = min(i2 - i1, j2 - j1)
        for t in range(paired):
            _merge(old, i1 + t, view[i1 + t], new[j1 + t])
        for i in reversed(range(i1 + paired, i2)):
            del old[i]
        for t, value in enumerate(new[j1 + paired : j2]):
            old.insert(i1 + paired + t, _fresh(value, like))


def schema_ordered(value, schema):
    """``value`` with mapping keys in the schema's order (id, title, description, …), unknown keys
    after."""
    if isinstance(value, dict):
        props = (schema or {}).get("properties", {})
        keys = [k for k in props if k in value] + [k for k in value if k not in props]
        return {k: schema_ordered(value[k], props.get(k)) for k in keys}
    if isinstance(value, list):
        return [schema_ordered(v, (schema or {}).get("items")) for v in value]
    return value


def _reads_as(text: str, data) -> bool:
    try:
        return same_value(parse_text(text, as_json=False, kind=KIND), data)
    except DataFileError:
        return False


def _plain_yaml(new: dict) -> str:
    """``new`` as a fresh file: block style, keys in schema order."""
    data = schema_ordered(new, COURSE_SCHEMA)
    for quoted in (False, True):  # every string double-quoted: never expected to be needed
        text = _dump(_yaml(), _fresh(data, quoted=quoted))
        if _reads_as(text, new):
            return text
    raise ValueError(
        "the course cannot be written as YAML that reads back the same; please report this"
    )


# a line that is blank or a comment starting in column 0
_LEAD = re.compile(r"(?:[ \t]*|#.*)\r?\n?\Z")


def _guess_indent(lines: Sequence[str]) -> tuple[int, int]:
    """(mapping indent, dash offset) of the file's block collections, so rewritten parts look like
    the rest."""
    mapping, offset = None, None
    for prev, line in zip(lines, lines[1:], strict=False):
        stripped = prev.rstrip()
        if not stripped.endswith(":") or stripped.lstrip().startswith("#"):
            continue
        base = len(prev) - len(prev.lstrip(" "))
        body = line.lstrip(" ")
        indent = len(line) - len(body) - base
        if body.startswith("- ") and offset is None and 0 <= indent <= 8:
            offset = indent
        elif (
            body.strip() and not body.startswith(("#", "-")) and mapping is None and 1 < indent <= 8
        ):
            mapping = indent
    return mapping or 2, 2 if offset is None else offset


def _segments(text: str, view: dict):
    """The file cut at its top-level keys: (header, [(key, lead lines, body lines)], trailer), or
    None when it is not a plain block mapping with one key per line start (then it is written
    afresh).

    Comment and blank lines in column 0 just above a key belong to that key (they go when it goes);
    those above the first key are the header and those after the last key's value the trailer: both
    always stay."""
    import yaml
    from yaml.nodes import MappingNode

    try:
        # no aliases: parse_text has refused them already
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    if (
        not isinstance(root, MappingNode)
        or root.flow_style
        or len(root.value) != len(view)
        or not root.value
    ):
        return None  # flow style ({...}, a JSON file) or duplicate keys
    starts = [k.start_mark.line for k, _ in root.value]
    if any(k.start_mark.column != 0 for k, _ in root.value) or starts != sorted(set(starts)):
        return None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    bounds = []  # where each key's lead comments begin
    for i, start in enumerate(starts):
        begin = start
        while i > 0 and begin - 1 > starts[i - 1] and _LEAD.match(lines[begin - 1]):
            begin -= 1
        bounds.append(begin)
    end = len(lines)
    while end - 1 > starts[-1] and _LEAD.match(lines[end - 1]):
        end -= 1
    segments = []
    for i, key in enumerate(view):
        stop = bounds[i + 1] if i + 1 < len(bounds) else end
        segments.append((key, lines[bounds[i] : starts[i]], lines[starts[i] : stop]))
    return lines[: starts[0]], segments, lines[end:]


def _exact_floats(node) -> None:
    """Floats read from the file as plain floats: ruamel.yaml writes its own back from a rounded
    mantissa (5.960464477539063e-08 came out ...062e-08), a plain float is written exactly (see
    _ruamel_classes)."""
    from ruamel.yaml.scalarfloat import ScalarFloat

    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in list(items):
        if isinstance(value, ScalarFloat):
            node[key] = float(value)
        else:
            _exact_floats(value)


def _merged_segment(yaml, key, body: str, view, new) -> str:
    """One top-level key's lines with ``new`` merged in; a fresh ``key: new`` when that does not
    read back."""
    try:
        node = _reader().load(body)
        _exact_floats(node)
        (node_key,) = node.keys()
        _merge(node, node_key, view, new)
        text = _dump(yaml, node)
        if _reads_as(text, {key: new}):
            return text
    except Exception:  # ruamel.yaml reads something PyYAML wrote differently: write this key afresh
        pass
    return _dump(yaml, _fresh({key: new}))


def merge_yaml(original_text: str, new: dict) -> str:
    """YAML text for ``new`` that keeps the original file's comments, key order and formatting
    wherever a value did not change: an instructor's edit must not wipe the admin's notes in the
    file.

    Top-level keys whose value did not change keep their lines byte for byte; changed ones are
    rewritten with ruamel.yaml (round trip), replacing only changed values and recursing into
    mappings and lists; removed keys go with the comment lines just above them; new keys are added
    at the end. Without a usable original (empty, not a mapping, flow style) ``new`` is written
    plainly, keys in COURSE_SCHEMA order. The result always reads back (datafiles.parse_text) as
    ``new``, same types included; strings such as '0123', 'yes' or '1e3' are quoted."""
    try:
        view = (
            parse_text(original_text, as_json=False, kind=KIND) if original_text.strip() else None
        )
    except DataFileError:
        view = None
    cut = _segments(original_text, view) if isinstance(view, dict) else None
    if cut is None:
        return _plain_yaml(new)
    header, segments, trailer = cut
    yaml = _yaml(*_guess_indent(original_text.splitlines()))
    parts = ["".join(header)]
    for key, lead, body in segments:
        if key not in new:
            continue
        parts.append("".join(lead))
        text = "".join(body)
        parts.append(
            text
            if same_value(view[key], new[key])
            else _merged_segment(yaml, key, text, view[key], new[key])
        )
    for key, value in new.items():
        if key not in view:
            parts.append(_dump(yaml, _fresh({key: value})))
    parts.append("".join(trailer))
    text = "".join(parts)
    return text if _reads_as(text, new) else _plain_yaml(new)
