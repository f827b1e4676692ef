"""The site reference: every setting of the site file, generated from the site model.

:class:`shopfloor.site.SiteConfig` is the one place a setting's type, default, bounds and
meaning are written; this module renders it as ``docs/site-reference.md`` (``shopfloor
site-reference``), with the demo site's value of each setting as the example where it sets
one. A test fails when the checked-in file is not what the model gives, so it cannot drift.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from shopfloor.site import NAME_PATTERN, SiteConfig

#: The placeholder for the key of a mapping of settings (``partitions.<partition>.max_cpus``).
KEY_PLACEHOLDER = {"partitions": "<partition>", "group_limits": "<group>",
                   "group_accounts": "<group>"}
DEFAULT_OUTPUT = Path("docs/site-reference.md")


@dataclass(frozen=True)
class Setting:
    """One leaf setting of the site file."""

    name: str  #: dotted, e.g. ``hub.bind_url`` or ``partitions.<partition>.max_walltime``
    type: str
    default: str
    description: str
    example: str


def type_text(annotation: Any) -> str:
    """A setting's type as an admin writes it: ``integer``, ``list of names``, ``text or empty``."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *meta = get_args(annotation)
        if base is str and any(getattr(m, "pattern", None) == NAME_PATTERN for m in
                               _metadata(meta)):
            return "name"
        return type_text(base)
    if origin is Literal:
        return " or ".join(json.dumps(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        parts = [a for a in get_args(annotation) if a is not type(None)]
        text = " or ".join(type_text(a) for a in parts)
        return f"{text} or empty" if len(parts) < len(get_args(annotation)) else text
    if origin is list:
        return f"list of {type_text(get_args(annotation)[0])}s"
    if origin is dict:
        key, value = get_args(annotation)
        return f"mapping of {type_text(key)} to {type_text(value)}"
    if _model_of(annotation) is not None:
        return "settings (below)"
    return {str: "text", int: "integer", float: "number", bool: "true/false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def _metadata(items: list[Any]) -> Iterator[Any]:
    for item in items:
        if isinstance(item, FieldInfo):
            yield from item.metadata
        else:
            yield item


def bounds_text(info: FieldInfo) -> str:
    """``≥ 1``, ``> 0, ≤ 300``: the bounds a field's validation enforces."""
    words = []
    for meta in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                words.append(f"{sign} {value:g}")
        if getattr(meta, "min_length", None):
            words.append(f"at least {meta.min_length} entry")
    return ", ".join(words)


def default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(section)"
    elif info.default is PydanticUndefined:
        return "(required)"
    else:
        value = info.default
    return _value_text(value)


def _value_text(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, str):
        return json.dumps(value) if value else '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value) if value else ("[]" if isinstance(value, list) else "{}")
    return str(value)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) \
        else None


def settings(model: type[BaseModel] = SiteConfig, prefix: str = "",
             example: Any = None) -> Iterator[Setting]:
    """Every leaf setting of ``model``, depth first, in the order the model declares them.

    ``example`` is the demo site's data at this level (values found there become examples).
    """
    for field_name, info in model.model_fields.items():
        name = f"{prefix}{field_name}"
        sample = example.get(field_name) if isinstance(example, dict) else None
        nested = _model_of(info.annotation)
        if nested is not None:
            yield from settings(nested, f"{name}.", sample)
            continue
        if get_origin(info.annotation) is dict:
            _key, value_type = get_args(info.annotation)
            value_model = _model_of(value_type)
            if value_model is not None:
                key = KEY_PLACEHOLDER.get(field_name, "<name>")
                yield Setting(name, type_text(info.annotation), default_text(info),
                              _describe(info), "")
                # Each key's first entry that sets a value gives that value's example.
                merged: dict[str, Any] = {}
                for entry in (sample or {}).values():
                    for k, v in (entry or {}).items():
                        merged.setdefault(k, v)
                yield from settings(value_model, f"{name}.{key}.", merged)
                continue
        kind = type_text(info.annotation)
        if kind == "text" and any(getattr(m, "pattern", None) == NAME_PATTERN
                                  for m in info.metadata):
            kind = "name"  # a plain Name field: pydantic moved the pattern into the field
        yield Setting(name, kind, default_text(info), _describe(info),
                      "" if sample is None else _value_text(sample))


def _describe(info: FieldInfo) -> str:
    text = " ".join((info.description or "").split())
    bounds = bounds_text(info)
    return f"{text} ({bounds})" if bounds else text


def demo_site_data() -> dict[str, Any]:
    """The packaged demo site file, whose values serve as examples."""
    path = resources.files("shopfloor.hub_config") / "demo_site.yaml"
    return yaml.safe_load(path.read_text())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or " "


def render(model: type[BaseModel] = SiteConfig, example: dict[str, Any] | None = None) -> str:
    """The whole reference as Markdown: one table per top-level section."""
    example = demo_site_data() if example is None else example
    rows = list(settings(model, "", example))
    lines = [
        "# Site file reference",
        "",
        "<!-- Generated by `shopfloor site-reference` from shopfloor.site.SiteConfig: do not",
        "     edit by hand; change the field's description in the model and regenerate. -->",
        "",
        "The site file is one YAML document (`$SHOPFLOOR_SITE`, validated when the hub starts;",
        "`shopfloor doctor` checks it against the live cluster). Every setting below is",
        "optional unless its default says *(required)*. *Example* is the value in the demo",
        "site file (`hub_config/demo_site.yaml`) where it sets one. Keys written `<partition>`",
        "or `<group>` are yours: one entry per partition or group.",
        "",
    ]
    grouped = {r.name.split(".", 1)[0] for r in rows if "." in r.name}
    sections: dict[str, list[Setting]] = {}
    for row in rows:
        head = row.name.split(".", 1)[0]
        sections.setdefault(head if head in grouped else "", []).append(row)
    for section, items in sections.items():
        lines += [f"## `{section}`" if section else "## Top level", ""]
        intro = _section_intro(model, section)
        if intro:
            lines += [intro, ""]
        lines += ["| setting | type | default | description | example |",
                  "|---|---|---|---|---|"]
        lines += [f"| `{r.name}` | {_cell(r.type)} | {_cell(r.default)} | "
                  f"{_cell(r.description)} | {_cell(r.example)} |" for r in items]
        lines.append("")
    lines.append(f"{len(rows)} settings.")
    return "\n".join(lines) + "\n"


def _section_intro(model: type[BaseModel], section: str) -> str:
    """The section's description in the model, else its settings class's docstring."""
    info = model.model_fields.get(section)
    if info is None:
        return ""
    nested = _model_of(info.annotation)
    if nested is None and get_origin(info.annotation) is dict:
        nested = _model_of(get_args(info.annotation)[1])
    text = info.description or (nested.__doc__ if nested is not None else "") or ""
    return " ".join(text.split())


def run_site_reference(args: argparse.Namespace) -> int:
    """``shopfloor site-reference``: write (or ``--check``) the reference file."""
    text = render()
    output = Path(args.output)
    if args.check:
        current = output.read_text() if output.exists() else ""
        if current != text:
            print(f"{output} is not current: run `shopfloor site-reference --output {output}`",
                  file=sys.stderr)
            return 1
        print(f"{output} is current")
        return 0
    if str(output) == "-":
        sys.stdout.write(text)
    else:
        output.write_text(text)
        print(f"wrote {output} ({text.count(chr(10) + '| `')} settings)")
    return 0


def add_site_reference_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``shopfloor site-reference`` to the ``shopfloor`` command's subparsers."""
    parser = sub.add_parser("site-reference", help="write the site file reference (Markdown)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help=f"where to write it, '-' for stdout (default {DEFAULT_OUTPUT})")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the file differs from what the model gives")
    parser.set_defaults(func=run_site_reference)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m shopfloor.ops.sitedoc``: the same as ``shopfloor site-reference``."""
    parser = argparse.ArgumentParser(prog="shopfloor")
    add_site_reference_parser(parser.add_subparsers(dest="command", required=True))
    return run_site_reference(parser.parse_args(["site-reference",
                                                 *(sys.argv[1:] if argv is None else argv)]))


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Setting", "add_site_reference_parser", "render", "run_site_reference", "settings"]
