"""layers.yaml as YAML: a loader refusing a key given twice, the trailing comments that cite the
report, and the words for a field's value in the spec's messages."""
from __future__ import annotations

import yaml

from ..errors import SpecError


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a key given twice in one mapping:
    YAML would keep the second silently (a second `seven-layer:` replacing the first)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error says so
                if first is not key_node:
                    raise _DuplicateKey(key, first.start_mark.line + 1, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep)


class _DuplicateKey(Exception):
    def __init__(self, key, first, second):
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


def load(text, file):
    """The data of YAML text; a key given twice, a syntax error or too deep a nesting is one SpecError."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise SpecError(file, f"lines {e.first} and {e.second}",
                        f"{e.key!r} is given twice in the same mapping (YAML would silently keep the second); "
                        "rename or remove one") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(file, where, f"YAML syntax error: {problem}; fix the YAML there") from None
    except RecursionError:
        raise SpecError(file, None, "the YAML is nested too deeply to read; flatten it") from None


def trailing_comments(text: str) -> dict:
    """{scalar text: the comment after it on its line}: where an equation cites the report."""
    out = {}
    lines = text.splitlines()

    def walk(node):
        if isinstance(node, yaml.ScalarNode):
            line = lines[node.end_mark.line] if node.end_mark.line < len(lines) else ""
            rest = line[node.end_mark.column:].strip()
            if rest.startswith("#"):
                out.setdefault(node.value, rest.lstrip("#").strip())
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                walk(key)
                walk(value)

    walk(yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))  # parse only, libyaml when present
    return out


def _what(value) -> str:
    """A value's kind as a person would say it, for messages: 'a list', 'nothing (null)', "the text 'abc'"."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (list, tuple)):
        return f"a list {_short(value)}"
    if isinstance(value, dict):
        return f"a mapping {_short(value)}"
    if isinstance(value, str):
        return f"the text {_short(value)}"
    return f"the number {value!r}" if isinstance(value, (int, float)) else f"a {type(value).__name__}"


def _short(value, width=40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _name(spec, where, value, what) -> str:
    """A field that names something (a kind, an activation, a loss): a string, or one line saying so."""
    if not isinstance(value, str) or not value:
        raise spec.error(where, f"must be the name of {what}, not {_what(value)}")
    return value


def _mapping(spec, where, value, example) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise spec.error(where, f"must be a mapping such as {example}, not {_what(value)}")
    return value
