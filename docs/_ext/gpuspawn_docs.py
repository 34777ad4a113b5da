"""Sphinx extension for the jupyter-gpuspawn docs: references generated from the code.

- ``autoconfigurable`` (autodoc-traits' directive, refined): a class's reference lists the settings
  the class adds. Settings inherited from DockerSpawner and JupyterHub are documented there, and
  GPUSwarmSpawner does not repeat GPUDockerSpawner's.
- ``gpuspawn-changed-defaults``: the inherited settings whose default a class changes, found from
  its ``@default`` handlers. The words are in CHANGED_DEFAULTS below; a handler without words, or
  words without a handler, fail the build.
- ``gpuspawn-course-schema``: every key of ``jupyter_gpuspawn.courses.COURSE_SCHEMA`` with its
  type, limits, whether it is required, its default and a description. Types and limits come from
  the schema; descriptions and defaults from the schema's own ``description``/``default`` where it
  has them, else from course_fields.yaml beside this file. A key without a description, or a
  description of a key the schema no longer has, fails the build.
- ``gpuspawn-cli``: one sub-command of ``jupyter-gpuspawn`` (usage line, arguments, options) from
  the argparse parser in jupyter_gpuspawn/cli.py. A sub-command no page renders fails the build.
- role ``opt``: a checked link to a setting in the configuration reference: {opt}`gpu_queue`
  (GPUDockerSpawner), {opt}`GPUSwarmSpawner.node_docker_hosts`, {opt}`StatusCollector.notice_file`.
- role ``pyvalue``: a value from the code, e.g. {pyvalue}`jupyter_gpuspawn.spec.PROTECTED_ENV`.
- role ``coursekey``: a checked link to a course file key: {coursekey}`gpus.max`.

Every problem is a Sphinx warning, so ``sphinx-build -W`` fails on it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re

import yaml
from autodoc_traits import ConfigurableDocumenter
from docutils import nodes
from docutils.statemachine import StringList
from sphinx import addnodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles
from traitlets import TraitType

logger = logging.getLogger(__name__)
HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = "jupyter_gpuspawn"

# The configurable classes with a reference page, by short name (the {opt} role's prefixes). A
# setting is documented on the most basic of these classes that has it.
CONFIGURABLES = {
    "GPUDockerSpawner": "jupyter_gpuspawn.spawner.GPUDockerSpawner",
    "GPUSwarmSpawner": "jupyter_gpuspawn.swarmspawner.GPUSwarmSpawner",
    "StatusCollector": "jupyter_gpuspawn.status.collector.StatusCollector",
    "GPUActivity": "jupyter_gpuspawn.status.activity.GPUActivity",
}

# Words for the inherited settings whose default a class changes (gpuspawn-changed-defaults).
CHANGED_DEFAULTS = {
    "GPUDockerSpawner": {
        "remove": "``True`` (DockerSpawner: ``False``). GPUs are assigned anew at every start, "
        "so a kept container would carry an old assignment; homes persist.",
        "network_name": "``'jupyter-gpuspawn'``, a Docker bridge the spawner creates with "
        "inter-container traffic off (DockerSpawner: ``'bridge'``). See :doc:`/admin/security`.",
        "use_internal_ip": "``True`` unless ``network_name`` is ``'bridge'``: the hub reaches "
        "each server on its container address (or 127.0.0.1 with host networking); only "
        "Docker's default bridge needs published ports.",
        "start_timeout": "``gpu_queue_timeout + http_timeout + 90`` seconds (60 when "
        "``gpu_queue_timeout`` is 0): the whole start counts, a wait in the queue included. A "
        "smaller value set by the admin shortens the wait instead, to ``start_timeout - "
        "http_timeout - 30`` seconds (300 with an ``http_timeout`` of 120 leaves 150 s); see "
        ":doc:`/admin/queue-reclaim`.",
        "options_form": "The course spawn form (``gpuspawn_form.html``, see "
        ":opt:`form_template_paths`).",
        "options_from_form": "Reads the spawn form's fields into ``course``, ``image`` and "
        "``gpus``.",
        "apply_user_options": "Nothing: ``user_options`` are validated and applied by the "
        "spawner's start, for the form and the REST API alike (this only tells JupyterHub 5.3 "
        "and later that they are handled).",
    },
    "GPUSwarmSpawner": {
        "gpu_inventory": "``'swarm'``: the GPUs the Swarm nodes advertise as ``NVIDIA-GPU`` "
        "generic resources.",
        "network_name": "``''``: each node's default bridge, isolated by the node settings in "
        ":doc:`/admin/swarm`.",
        "use_internal_ip": "``False``: servers publish their port on their node's own address, "
        "where the hub reaches them.",
        "pull_policy": "``'skip'``: nodes of an offline cluster have no registry; a start goes "
        "to a node that has the image (see :opt:`GPUSwarmSpawner.require_node_image`).",
    },
}


# ---- configuration reference -------------------------------------------------------------
def _configurable_classes() -> dict:
    classes = {}
    for short, path in CONFIGURABLES.items():
        module, name = path.rsplit(".", 1)
        classes[short] = getattr(importlib.import_module(module), name)
    return classes


def _documented_on(cls, trait) -> bool:
    """Whether ``trait`` belongs on ``cls``'s page: defined in this package, and ``cls`` is the
    most basic documented class that has it (GPUSwarmSpawner does not repeat GPUDockerSpawner's
    settings)."""
    owner = trait.this_class
    if owner is None or not owner.__module__.startswith(PACKAGE):
        return False
    documented = tuple(_configurable_classes().values())
    for klass in reversed(cls.__mro__):
        if klass in documented and issubclass(klass, owner):
            return klass is cls
    return False


class GPUSpawnConfigurableDocumenter(ConfigurableDocumenter):
    """autodoc-traits' ``autoconfigurable``, listing only the settings the class itself adds (see
    the module's docstring), without the class docstring (the page says what the class is)."""

    def get_object_members(self, want_all):
        check, members = super().get_object_members(want_all)
        kept = []
        for member in members:
            obj = getattr(member, "object", None)
            if (
                isinstance(obj, TraitType)
                and obj.metadata.get("config")
                and _documented_on(self.object, obj)
            ):
                kept.append(member)
        return check, kept

    def get_doc(self):
        return []

    def format_signature(self, **kwargs):
        return ""  # Configurable(**kwargs): nothing an admin writes


class ChangedDefaults(SphinxDirective):
    """``.. gpuspawn-changed-defaults:: GPUDockerSpawner``: the inherited settings whose default
    the class changes."""

    required_arguments = 1

    def run(self):
        short = self.arguments[0]
        classes = _configurable_classes()
        if short not in classes:
            return [
                self.state.document.reporter.warning(f"unknown class {short!r}", line=self.lineno)
            ]
        cls = classes[short]
        words = CHANGED_DEFAULTS.get(short, {})
        changed = []
        for value in vars(cls).values():
            handler_of = getattr(value, "trait_name", None)
            if type(value).__name__ == "DefaultHandler" and handler_of:
                trait = cls.class_traits().get(handler_of)
                if (
                    trait is not None
                    and trait.metadata.get("config")
                    and not _documented_on(cls, trait)
                ):
                    changed.append(handler_of)
        for name in changed:
            if name not in words:
                logger.warning(
                    f"{short}.{name}: the class changes this setting's default; describe it in "
                    "CHANGED_DEFAULTS in docs/_ext/gpuspawn_docs.py",
                    location=self.get_location(),
                )
        for name in words:
            if name not in changed:
                logger.warning(
                    f"{short}.{name}: described in CHANGED_DEFAULTS, but the class no longer "
                    "changes its default",
                    location=self.get_location(),
                )
        module = CONFIGURABLES[short].rsplit(".", 1)[0]
        lines = []
        for name in changed:  # entries {opt} links to, like autodoc-traits' own
            lines += [
                f".. py:attribute:: {short}.{name}",
                f"   :module: {module}",
                "",
                f"   {words.get(name, '')}",
                "",
            ]
        return self._parse(lines)

    def _parse(self, lines):
        node = nodes.container()
        self.state.nested_parse(
            StringList(lines, source=self.get_source_info()[0]), self.content_offset, node
        )
        return node.children


def opt_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """{opt}`name` or {opt}`Class.name`: a literal linked to the setting's entry in the
    configuration reference."""
    short, _, trait = text.rpartition(".")
    short = short or "GPUDockerSpawner"
    if short not in CONFIGURABLES:
        msg = inliner.reporter.error(f"opt: unknown class {short!r} in {text!r}", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    target = CONFIGURABLES[short]
    classes = _configurable_classes()
    found = classes[short].class_traits(config=True).get(trait)
    if found is not None:  # the entry is on the class that documents it (a base class's page)
        for other, path in CONFIGURABLES.items():
            if _documented_on(classes[other], found):
                target = path
    ref = addnodes.pending_xref(
        rawtext,
        refdomain="py",
        reftype="attr",
        reftarget=f"{target}.{trait}",
        refexplicit=True,
        refwarn=True,
    )
    ref += nodes.literal(text, text)
    return [ref], []


def pyvalue_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """{pyvalue}`jupyter_gpuspawn.spec.PROTECTED_ENV`: a value from the code; a tuple becomes a
    list of literals."""
    try:
        found = _python_value(text)
    except (ImportError, AttributeError, ValueError) as e:
        msg = inliner.reporter.error(f"pyvalue: cannot read {text!r}: {e}", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    values = found if isinstance(found, (tuple, list, set, frozenset)) else [found]
    result = []
    for i, value in enumerate(values):
        if i:
            result.append(nodes.Text(", "))
        result.append(nodes.literal(str(value), str(value)))
    return result, []


# ---- course file reference ---------------------------------------------------------------
def _python_value(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _expand(text: str) -> str:
    """``{{python:jupyter_gpuspawn.spec.PROTECTED_ENV}}`` in a description: that value from the
    code, as literals."""

    def value(match):
        found = _python_value(match.group(1))
        if isinstance(found, (tuple, list, set, frozenset)):
            return ", ".join(f"``{v}``" for v in found)
        return f"``{found}``"

    return re.sub(r"\{\{python:([\w.]+)\}\}", value, text)


def _literal(value) -> str:
    return "``" + (json.dumps(value) if not isinstance(value, str) else value) + "``"


def _describe_type(schema: dict) -> str:
    """A schema (without its properties) in words: type and limits."""
    if "anyOf" in schema:
        return " or ".join(_describe_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(_literal(v) for v in schema["enum"])
    kind = schema.get("type", "any value")
    limits = []
    low = f"{schema['minimum']:g}" if "minimum" in schema else None
    if "minimum" in schema and "maximum" in schema:
        limits.append(f"{schema['minimum']:g} to {schema['maximum']:g}")
    else:
        if low is not None:
            limits.append(f"at least {low}")
        if "exclusiveMinimum" in schema:
            limits.append(f"more than {schema['exclusiveMinimum']:g}")
        if "maximum" in schema:
            limits.append(f"at most {schema['maximum']:g}")
    if schema.get("minLength") == 1:
        limits.append("not empty")
    elif "minLength" in schema:
        limits.append(f"at least {schema['minLength']} characters")
    if "maxLength" in schema:
        limits.append(f"at most {schema['maxLength']} characters")
    if "pattern" in schema:
        limits.append(f"matching ``{schema['pattern']}``")
    if kind == "array":
        items = schema.get("items", {})
        if items.get("type") == "object":
            text = "list of mappings"
        elif (
            items.get("type") == "string"
            and set(items) <= {"type", "minLength"}
            and items.get("minLength", 1) == 1
        ):
            text = "list of strings" + (" (not empty)" if items.get("minLength") else "")
        else:
            text = f"list of items ({_describe_type(items)})"
        counts = []
        if "minItems" in schema:
            counts.append(f"at least {schema['minItems']}")
        if "maxItems" in schema:
            counts.append(f"at most {schema['maxItems']}")
        return text + (f" ({', '.join(counts)})" if counts else "")
    if kind == "object":
        if "properties" in schema:
            return "mapping"
        names = schema.get("propertyNames", {})
        values = schema.get("additionalProperties", {})
        text = f"mapping of names ({_describe_type(names)})"
        text += f" to values ({_describe_type(values)})"
        if "maxProperties" in schema:
            text += f", at most {schema['maxProperties']} entries"
        return text
    return kind + (f" ({', '.join(limits)})" if limits else "")


def _walk(schema: dict, prefix: str = ""):
    """(path, the key's schema, required, child schema with properties or None), in schema
    order."""
    required = set(schema.get("required", ()))
    for key, sub in schema.get("properties", {}).items():
        path = prefix + key
        child = None
        if sub.get("type") == "object" and "properties" in sub:
            child = sub
        elif sub.get("type") == "array" and "properties" in sub.get("items", {}):
            child = sub["items"]
        yield path, sub, key in required, child
        if child is not None:
            yield from _walk(child, path + ("[]." if sub.get("type") == "array" else "."))


def _load_fields() -> dict:
    with open(os.path.join(HERE, "course_fields.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


class CourseSchema(SphinxDirective):
    """``.. gpuspawn-course-schema::``: the course file reference, nested as the schema is."""

    def run(self):
        schema = _python_value("jupyter_gpuspawn.courses.COURSE_SCHEMA")
        fields = _load_fields()
        entries = list(_walk(schema))
        paths = {path for path, *_ in entries}
        for extra in sorted(set(fields) - paths):
            logger.warning(
                f"course_fields.yaml describes {extra!r}, which COURSE_SCHEMA does not have",
                location=self.get_location(),
            )
        lines = []
        for path, sub, required, child in entries:
            depth = path.count(".")
            pad = "   " * depth
            field = fields.get(path) or {}
            description = sub.get("description") or field.get("description")
            if not description:
                logger.warning(
                    f"course key {path!r} has no description (add one to COURSE_SCHEMA or to "
                    "docs/_ext/course_fields.yaml)",
                    location=self.get_location(),
                )
                description = ""
            default = _literal(sub["default"]) if "default" in sub else field.get("default")
            if not required and default is None:
                logger.warning(
                    f"course key {path!r} has no default (add one to COURSE_SCHEMA or to "
                    "docs/_ext/course_fields.yaml)",
                    location=self.get_location(),
                )
            lines += [f"{pad}.. coursekey:: {path}", ""]
            body = [f":Type: {_describe_type(sub)}", f":Required: {'yes' if required else 'no'}"]
            if not required:
                body.append(f":Default: {_expand(str(default))}")
            if child is not None and child.get("additionalProperties") is False:
                allowed = ", ".join(f"``{k}``" for k in child["properties"])
                body.append(f":Keys: {allowed} (any other key is an error)")
            body.append("")
            body += _expand(description).strip().splitlines()
            body.append("")
            lines += [f"{pad}   {line}" if line else "" for line in body]
        node = nodes.container(classes=["gpuspawn-course-schema"])
        nested_parse_with_titles(self.state, StringList(lines, source="COURSE_SCHEMA"), node)
        return [node]


# ---- CLI reference -----------------------------------------------------------------------
def _subparsers(parser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _rst_text(text: str) -> str:
    """argparse help as RST text: nothing in it is markup, and options (--inventory) are code."""
    text = re.sub(r"([*`|\\]|_(?!\w))", r"\\\1", text)  # markup characters, name_ references
    return re.sub(r"(?<![\w-])(--?[A-Za-z][\w-]*)", r"``\1``", text)


class CLICommand(SphinxDirective):
    """``.. gpuspawn-cli:: validate``: usage line, arguments and options of one sub-command of
    ``jupyter-gpuspawn`` (the page says what the command is for)."""

    required_arguments = 1

    def run(self):
        from jupyter_gpuspawn.cli import build_parser

        parser = build_parser()
        name = self.arguments[0]
        commands = _subparsers(parser)
        if name not in commands:
            return [
                self.state.document.reporter.warning(
                    f"jupyter-gpuspawn has no command {name!r}", line=self.lineno
                )
            ]
        rendered = self.env.__dict__.setdefault("gpuspawn_cli_rendered", {})
        rendered.setdefault(self.env.docname, set()).add(name)
        sub = commands[name]
        sub.prog = f"jupyter-gpuspawn {name}"
        usage = " ".join(sub.format_usage().split()).removeprefix("usage: ")
        program = f"jupyter-gpuspawn {name}"
        lines = [f".. program:: {program}", ""]
        lines += ["::", "", f"   {usage}", ""]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if action.option_strings:
                metavar = "" if action.nargs == 0 else " " + (action.metavar or action.dest.upper())
                signature = ", ".join(f"{o}{metavar}" for o in action.option_strings)
            else:
                signature = action.metavar or action.dest
            text = _rst_text(action.help or "")
            extras = []
            if action.choices:
                extras.append("one of " + ", ".join(f"``{c}``" for c in action.choices))
            if action.default not in (None, False, [], argparse.SUPPRESS):
                extras.append(f"default ``{action.default}``")
            if action.required:
                extras.append("required")
            if isinstance(action, argparse._AppendAction) and "repeatable" not in text:
                extras.append("repeatable")
            sentences = [t for t in (text, "; ".join(extras)) if t]
            text = " ".join(f"{t[:1].upper()}{t[1:]}." for t in sentences)
            lines += [f".. option:: {signature}", "", f"   {text}", ""]
        node = nodes.container(classes=["gpuspawn-cli"])
        self.state.nested_parse(
            StringList(lines, source="jupyter_gpuspawn/cli.py"), self.content_offset, node
        )
        return node.children


def _check_cli_coverage(app, env):
    from jupyter_gpuspawn.cli import build_parser

    rendered = set().union(*getattr(env, "gpuspawn_cli_rendered", {}).values())
    for name in _subparsers(build_parser()):
        if name not in rendered:
            logger.warning(
                f"jupyter-gpuspawn {name} is documented on no page (add a gpuspawn-cli directive)"
            )


def _merge_cli(app, env, docnames, other):
    env.gpuspawn_cli_rendered = getattr(env, "gpuspawn_cli_rendered", {})
    for docname, names in getattr(other, "gpuspawn_cli_rendered", {}).items():
        if docname in docnames:
            env.gpuspawn_cli_rendered[docname] = names


def _purge_cli(app, env, docname):
    getattr(env, "gpuspawn_cli_rendered", {}).pop(docname, None)


def setup(app):
    app.setup_extension("autodoc_traits")
    app.add_autodocumenter(GPUSpawnConfigurableDocumenter, override=True)
    app.add_directive("gpuspawn-changed-defaults", ChangedDefaults)
    app.add_directive("gpuspawn-course-schema", CourseSchema)
    app.add_directive("gpuspawn-cli", CLICommand)
    app.add_role("opt", opt_role)
    app.add_role("pyvalue", pyvalue_role)
    app.add_object_type("coursekey", "coursekey", indextemplate="pair: %s; course file key")
    app.connect("env-check-consistency", _check_cli_coverage)
    app.connect("env-merge-info", _merge_cli)
    app.connect("env-purge-doc", _purge_cli)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
