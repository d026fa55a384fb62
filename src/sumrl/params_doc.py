"""The params reference: every key of the schema with what it accepts, its default, what it does and which
stages it reruns (from the stage table).

`sumrl params --markdown` prints it; `sumrl params --write README.md` replaces the README's section between
the two REFERENCE_MARKERS, and a test fails when that section is not what the schema says. The defaults are
the schema's `default` values, which a test keeps equal to params.yaml.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sumrl.params import load_schema
from sumrl.stages import RL_METHODS, STAGES

REFERENCE_MARKERS = ("<!-- params-reference:start (sumrl params --write README.md) -->",
                     "<!-- params-reference:end -->")


def _resolved(schema: dict, node: dict) -> dict:
    """`node` with its $ref's keys filled in underneath its own."""
    while "$ref" in node:
        target = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _is_section(node: dict) -> bool:
    return node.get("type") == "object" and "properties" in node


def schema_defaults(schema: dict | None = None) -> dict:
    """The params that the schema's defaults make: what params.yaml must hold."""
    schema = schema or load_schema()

    def build(node: dict) -> Any:
        node = _resolved(schema, node)
        if "default" in node or not _is_section(node):
            return node.get("default")
        return {key: build(child) for key, child in node["properties"].items()}

    return build(schema)


def leaves(schema: dict | None = None) -> Iterator[tuple[str, dict, Any]]:
    """(dotted key, resolved schema node, default) for every key a user sets, sections' own keys included
    (`sft.lora.r`); a list of objects contributes its items' keys as `key[].field`, without defaults."""
    schema = schema or load_schema()

    def walk(node: dict, path: str, default: Any, has_default: bool):
        node = _resolved(schema, node)
        if _is_section(node):
            for key, child in node["properties"].items():
                value = default.get(key) if isinstance(default, dict) else None
                yield from walk(child, f"{path}.{key}" if path else key, value, has_default)
            return
        items = node.get("items")
        if isinstance(items, dict):
            node = {**node, "items": _resolved(schema, items)}
        yield path, node, (default if has_default else None)
        if node.get("type") == "array" and isinstance(items, dict) and _is_section(_resolved(schema, items)):
            yield from walk(items, f"{path}[]", None, False)

    yield from walk(schema, "", schema_defaults(schema), True)


def _accepts(node: dict) -> str:
    """What a key accepts, in a few words: choices, or a type with its bounds."""
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kinds = node.get("type", "")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    nullable = "null" in kinds
    kinds = [k for k in kinds if k != "null"]
    text = " or ".join(kinds)
    if kinds == ["array"]:
        items = node.get("items", {})
        text = ("list of " + " \\| ".join(f"`{v}`" for v in items["enum"])) if "enum" in items else \
            f"list of {items.get('type', 'object')}"
    bounds = []
    if "minimum" in node:
        bounds.append(f">= {node['minimum']}")
    if "exclusiveMinimum" in node:
        bounds.append(f"> {node['exclusiveMinimum']}")
    if "maximum" in node:
        bounds.append(f"<= {node['maximum']}")
    if "exclusiveMaximum" in node:
        bounds.append(f"< {node['exclusiveMaximum']}")
    if bounds:
        text += " " + ", ".join(bounds)
    return text + (" or null" if nullable else "")


def _default(value: Any, has_default: bool) -> str:
    if not has_default:
        return ""
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    return f"`{value}`"


def stages_reading(key: str) -> list[str]:
    """The stages whose result `key` decides (a change reruns them and what follows): the stage table's params
    entries that are `key` or a section above it; `rl.{method}` stands for each method's section."""
    key = key.split("[]", 1)[0]
    out = []
    for stage in STAGES:
        entries = [e.replace("{method}", m) for e in stage.params for m in (RL_METHODS if "{method}" in e else [""])]
        if any(key == e or key.startswith(e + ".") for e in entries):
            out.append(stage.name)
    return out


def reference_markdown(schema: dict | None = None) -> str:
    """One table per top-level section."""
    schema = schema or load_schema()
    out: list[str] = []
    section = None
    for key, node, default in leaves(schema):
        top = key.split(".", 1)[0].split("[", 1)[0]
        if top != section:
            section = top
            about = _resolved(schema, schema["properties"][top]).get("description", "")
            out += ["", f"**`{top}`**" + (f": {' '.join(about.split())}" if about and "." in key else ""), "",
                    "| key | accepts | default | what it does | reruns |", "|---|---|---|---|---|"]
        text = " ".join(node.get("description", "").split()).replace("|", "\\|")
        reruns = ", ".join(stages_reading(key)) or "nothing (speed or bookkeeping only)"
        out.append(f"| `{key}` | {_accepts(node)} | {_default(default, '[]' not in key)} | {text} | {reruns} |")
    return "\n".join(out).strip() + "\n"


def write_reference(path: Path) -> bool:
    """Replace the reference section of `path`; True when it changed."""
    start, end = REFERENCE_MARKERS
    text = path.read_text()
    if start not in text or end not in text:
        raise ValueError(f"{path}: no params reference section (the lines {start} and {end})")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    new = f"{head}{start}\n{reference_markdown()}{end}{tail}"
    if new != text:
        path.write_text(new)
    return new != text
