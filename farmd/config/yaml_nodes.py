"""The YAML node locator: a config file composed into nodes (never `yaml.load`), whose
mappings and scalars are read here with their line and column, so that every refusal
says `FILE:LINE:COLUMN: KEY: what is wrong (got VALUE)`. Only scalars with a standard
tag are ever constructed (with `SafeConstructor`)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import attrs
import yaml

from farmd.errors import ConfigError, UserError

TAG: Final = "tag:yaml.org,2002:"
_MAP_TAG: Final = TAG + "map"
_STR_TAG: Final = TAG + "str"
_NULL_TAG: Final = TAG + "null"
# Standard scalar tags SafeConstructor builds; a value of the wrong one of these is
# refused as a wrong type, any other tag (`!foo`, `!!python/...`) as non-standard.
_SCALAR_TAGS: Final = frozenset(
    TAG + name for name in ("null", "bool", "int", "float", "str", "timestamp", "binary")
)
_MAX_SHOWN: Final = 60


@attrs.frozen
class Source:
    """The file being read: its name for messages and its directory for relative paths.

    `error_type` is the error its refusals are (ConfigError for the farm config,
    ReleaseError for a release manifest)."""

    filename: str
    directory: Path
    constructor: yaml.constructor.SafeConstructor = attrs.field(
        factory=yaml.constructor.SafeConstructor, eq=False
    )
    error_type: type[UserError] = attrs.field(default=ConfigError, kw_only=True)

    def error(self, node: yaml.Node, key: str, what: str) -> UserError:
        """`FILE:LINE:COLUMN: KEY: what (got VALUE)`, at the start of `node`."""
        mark = node.start_mark
        where = f"{self.filename}:{mark.line + 1}:{mark.column + 1}"
        return self.error_type(f"{where}: {key}: {what} (got {_show(node)})")

    def mapping(
        self, node: yaml.Node, key: str, allowed: tuple[str, ...] | None, what: str
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The items of a mapping node by key; refuses a non-mapping (a null is empty),
        keys that are not strings, duplicates and keys outside `allowed` (None: any)."""
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG:
            return {}
        if not isinstance(node, yaml.MappingNode) or node.tag != _MAP_TAG:
            raise self.error(node, key, f"must be a mapping of {what}")
        items: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR_TAG):
                if key_node.tag == TAG + "merge":
                    raise self.error(key_node, key, "merge keys ('<<') are not supported")
                raise self.error(key_node, key, f"{what} must be named by plain strings")
            name = key_node.value
            if allowed is not None and name not in allowed:
                raise self.error(key_node, key, f"unknown key; allowed: {', '.join(allowed)}")
            if name in items:
                first = items[name][0].start_mark
                where = f"{first.line + 1}:{first.column + 1}"
                raise self.error(
                    key_node, f"{key}.{name}", f"duplicate key, first given at {where}"
                )
            items[name] = (key_node, value_node)
        return items

    def scalar(self, node: yaml.Node, key: str) -> object:
        """The Python value of a scalar node with a standard tag."""
        if isinstance(node, yaml.MappingNode):
            raise self.error(node, key, "must be a single value")
        if isinstance(node, yaml.SequenceNode):
            raise self.error(node, key, "must be a single value")
        if node.tag not in _SCALAR_TAGS:
            tag = "!!" + node.tag.removeprefix(TAG) if node.tag.startswith(TAG) else node.tag
            raise self.error(node, key, f"non-standard YAML tag {tag!r} is not allowed")
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
            # An explicit standard tag on text it cannot read: `!!int abc`, `!!bool maybe`.
            tag = node.tag.removeprefix(TAG)
            raise self.error(node, key, f"not a valid !!{tag} value") from None


def _show(node: yaml.Node) -> str:
    """The source text of a value, quoted and on one line, for `(got ...)`."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == _NULL_TAG:
        return "null"
    text = str(node.value)
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return repr(text)
