"""Strict YAML for the config: duplicate keys are errors that name their key path.

``load_yaml(text, file)`` parses one document with PyYAML's SafeLoader, refusing a key given
twice in one mapping (YAML itself would keep the last silently), and turns every syntax error
into a ConfigError with line and column.
"""

from __future__ import annotations

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from .config_error import ConfigError


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in a mapping (YAML would keep the last silently).

    Keys brought in by a ``<<`` merge may still be overridden explicitly: that is the point of
    merges.  ``_paths`` maps id(node) -> key path, filled before construction, for the error.
    """

    _file: str
    _paths: dict[int, str]

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen: dict[object, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, ScalarNode):
                    continue
                key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                if key in seen:
                    raise ConfigError(self._file, _join(self._paths.get(id(node), ""), key),
                                      f"duplicate key '{key}' (line {line}; first at line {seen[key]})")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _node_paths(root) -> dict[int, str]:
    """Key path of every mapping node (first path wins for anchors; cycles are safe)."""
    paths: dict[int, str] = {}
    stack = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in paths:
            continue
        paths[id(node)] = path
        if isinstance(node, MappingNode):
            for k, v in node.value:
                if isinstance(k, ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    stack.append((v, _join(path, k.value)))
        elif isinstance(node, SequenceNode):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node.value))
    return paths


def load_yaml(text: str, file: str) -> object:
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        loader._file, loader._paths = file, _node_paths(node)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = ": ".join(p for p in (e.context, e.problem) if p) or "syntax error"
        raise ConfigError(file, "", f"invalid YAML{where}: {what}") from None
    except yaml.YAMLError as e:
        raise ConfigError(file, "", f"invalid YAML: {e}") from None
    finally:
        loader.dispose()
