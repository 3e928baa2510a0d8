"""Safe, located YAML reading: the only place jobsys parses YAML.

Returns plain data plus a map from key path to line number, so that every
validation error can say ``config/queues.yaml:12: capsules.ai.concurrency: ...``.
Duplicate keys, non-mapping roots, alias bombs and oversized files are errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 1024 * 1024  # a config file over 1 MiB is a mistake
MAX_NODES = 100_000  # aliases expanding past this are an alias bomb

Path_ = tuple[str | int, ...]


class YamlProblem(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(frozen=True)
class LocatedDocument:
    path: Path
    data: dict[str, Any]
    lines: dict[Path_, int]

    def line_of(self, key_path: Path_) -> int:
        """Line of the deepest known ancestor of ``key_path`` (1 when unknown)."""
        path = tuple(key_path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def _build(node: Any, path: Path_, lines: dict[Path_, int], budget: list[int]) -> Any:
    import yaml

    budget[0] -= 1
    if budget[0] < 0:
        raise YamlProblem(node.start_mark.line + 1, "too many nodes (alias expansion?)")
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        if node.tag != "tag:yaml.org,2002:map":
            raise YamlProblem(
                node.start_mark.line + 1, f"invalid value: unsupported tag {node.tag}"
            )
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise YamlProblem(key_node.start_mark.line + 1, "merge keys (<<) are not supported")
            key = _build(key_node, (*path, "<key>"), {}, budget)
            if not isinstance(key, (str, int)):
                raise YamlProblem(key_node.start_mark.line + 1, "keys must be strings")
            if key in result:
                dotted = ".".join(str(p) for p in (*path, key))
                raise YamlProblem(key_node.start_mark.line + 1, f"{dotted}: duplicate key")
            lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _build(value_node, (*path, key), lines, budget)
        return result
    if isinstance(node, yaml.SequenceNode):
        if node.tag != "tag:yaml.org,2002:seq":
            raise YamlProblem(
                node.start_mark.line + 1, f"invalid value: unsupported tag {node.tag}"
            )
        return [_build(item, (*path, i), lines, budget) for i, item in enumerate(node.value)]
    return _scalar_loader().construct_object(node, deep=True)


_LOADER: Any = None


def _scalar_loader() -> Any:
    global _LOADER
    if _LOADER is None:
        import yaml

        _LOADER = yaml.SafeLoader("")
    return _LOADER


def read(path: Path) -> LocatedDocument:
    """Read one YAML mapping; raise :class:`YamlProblem` with a line on any defect."""
    import yaml

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise YamlProblem(1, "file not found") from None
    except OSError as exc:
        raise YamlProblem(1, f"cannot read: {exc.strerror}") from None
    if size > MAX_FILE_BYTES:
        raise YamlProblem(1, f"file is {size} bytes; the limit is {MAX_FILE_BYTES}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise YamlProblem(1, f"cannot read: {exc}") from None
    try:
        # libyaml's composer when PyYAML has it: the same nodes and marks, ~10x faster
        # (the pure-Python one took ~80 ms for both files: every command reads them)
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise YamlProblem(line, f"invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise YamlProblem(1, f"invalid YAML: {exc}") from None
    if root is None:
        return LocatedDocument(path=path, data={}, lines={})
    if not isinstance(root, yaml.MappingNode):
        raise YamlProblem(root.start_mark.line + 1, "the top level must be a mapping of keys")
    lines: dict[Path_, int] = {}
    try:
        data = _build(root, (), lines, [MAX_NODES])
    except yaml.constructor.ConstructorError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise YamlProblem(line, f"invalid value: {exc.problem}") from None
    return LocatedDocument(path=path, data=data, lines=lines)
