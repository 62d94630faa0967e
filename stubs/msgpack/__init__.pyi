# Type information for the part of msgpack that farmd uses. msgpack 1.2 ships neither a
# py.typed marker nor stubs, and mypy --strict refuses an untyped import.
# Keyword lists follow msgpack 1.x (msgpack/__init__.py, msgpack/fallback.py).
from collections.abc import Callable
from typing import Any

def packb(
    o: Any,
    *,
    default: Callable[[Any], Any] | None = ...,
    use_single_float: bool = ...,
    use_bin_type: bool = ...,
    strict_types: bool = ...,
    datetime: bool = ...,
    unicode_errors: str | None = ...,
) -> bytes: ...
def unpackb(
    packed: bytes | bytearray | memoryview,
    *,
    raw: bool = ...,
    use_list: bool = ...,
    strict_map_key: bool = ...,
    timestamp: int = ...,
    unicode_errors: str | None = ...,
    object_hook: Callable[[dict[Any, Any]], Any] | None = ...,
    object_pairs_hook: Callable[[list[tuple[Any, Any]]], Any] | None = ...,
    ext_hook: Callable[[int, bytes], Any] | None = ...,
    max_buffer_size: int = ...,
    max_str_len: int = ...,
    max_bin_len: int = ...,
    max_array_len: int = ...,
    max_map_len: int = ...,
    max_ext_len: int = ...,
) -> Any: ...
