"""Cluster paths, the derived cluster tree, restrictions and cross-cluster patterns.

Theory of operation
-------------------
A cluster is a path in a tree: `/` is the root, `/show1/lighting` is two levels down.
Nothing declares a cluster; the tree is whatever the clusters of the current workers and
jobs (and their ancestors) make it. `ClusterTree` keeps reference counts per path, so a
cluster exists exactly while something is in it or below it.

Paths are plain, normalised `str` values (`ClusterPath`): every path that enters farmd
passes `parse_cluster` once, and after that string operations are exact. In particular
"is X at or below A" is `X == A or X.startswith(A + "/")` (or A is the root), and
`depth` is the number of separators.

Paths are bounded (`MAX_CLUSTER_DEPTH` levels, `MAX_SEGMENT_CHARS` per segment,
`MAX_CLUSTER_CHARS` in all), and so are restriction and pattern texts
(`MAX_EXPRESSION_CHARS`): the tree, the ranking index and `ancestors` hold every
ancestor of a path, which costs depth x length, so one unbounded path (20,000 levels in
a 40 KB submit) once took the supervisor to 20 GB. Every entry (submit, modify, worker
registration, the workers: configuration, restrictions, cross-cluster patterns) goes
through the parsers here, so the bounds hold everywhere; `ancestors` checks them again,
so nothing unparsed can make it expensive. Qube-scale trees are a few levels deep.

The rank of a job for a worker starts from its *cluster order* (`cluster_order`): 1 in
the worker's own cluster, else `2 + depth(worker) - depth(LCA)`. Moving toward the root
is free, every boundary crossed away from it costs one.

Two small languages live here, both parsed once into frozen values that cache their
answers per cluster (the ranking index asks the same question for the same few
thousand clusters over and over):

- `Restrictions` (`/A || /A/* or /A/+, /+`): which clusters a worker or a job accepts.
- `CrossClusterPatterns` (`/showA+,/showB`): where a job ranks as if in its own cluster.
  A `+` entry is a *string* prefix, as Qube documents: `/showA+` also matches `/showAB`.

Everything here is pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import enum
import functools
import re
import reprlib
from collections.abc import Iterator
from typing import NewType

import attrs

from farmd.errors import ClusterPathError, PatternError, RestrictionError

ClusterPath = NewType("ClusterPath", str)
ROOT = ClusterPath("/")

_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")

# A Qube-scale tree is a few levels deep (/show/sequence/department); these leave ample
# room and keep every path's ancestors (depth x length characters) small.
MAX_CLUSTER_DEPTH = 16  # levels below the root
MAX_SEGMENT_CHARS = 64  # characters of one level's name
MAX_CLUSTER_CHARS = 256  # characters of a whole path
# a restriction expression or a cross-cluster pattern list, in all
MAX_EXPRESSION_CHARS = 4096
_QUOTE_CHARS = 40  # how much of an overlong value an error message shows


def quote(text: str) -> str:
    """`text` as an error message shows it: its repr, cut short (with its length) when
    it is long, so one line stays one readable line."""
    if len(text) <= _QUOTE_CHARS + 10:
        return repr(text)
    return f"{text[:_QUOTE_CHARS]!r}... ({len(text)} characters)"


def parse_cluster(text: object) -> ClusterPath:
    """Validate and normalise a cluster path; refuse anything else quoting the input."""
    if not isinstance(text, str):
        shown = reprlib.repr(text)  # bounded, however big
        msg = f"bad cluster path {shown}: must be a string such as '/show1/lighting'"
        raise ClusterPathError(msg)
    return _parse_cluster(text)


def _oversize(text: str, segments: list[str]) -> str | None:
    """Why a path (or a pattern's prefix) is over the size bounds, naming the limit."""
    if len(text) > MAX_CLUSTER_CHARS:
        return f"longer than {MAX_CLUSTER_CHARS} characters"
    if len(segments) > MAX_CLUSTER_DEPTH:
        return f"{len(segments)} levels deep, at most {MAX_CLUSTER_DEPTH} are allowed"
    for segment in segments:
        if len(segment) > MAX_SEGMENT_CHARS:
            return f"segment {quote(segment)} is longer than {MAX_SEGMENT_CHARS} characters"
    return None


def _refuse_oversize(text: str, segments: list[str]) -> None:
    why = _oversize(text, segments)
    if why is not None:
        msg = f"bad cluster path {quote(text)}: {why}"
        raise ClusterPathError(msg)


@functools.lru_cache(maxsize=16384)
def _parse_cluster(text: str) -> ClusterPath:
    # the length first: nothing below may cost more than a bounded path does
    if len(text) > MAX_CLUSTER_CHARS + 1:  # + 1: a trailing '/' is trimmed
        _refuse_oversize(text, [])
    if not text.startswith("/"):
        msg = f"bad cluster path {quote(text)}: must start with '/' (the root is '/')"
        raise ClusterPathError(msg)
    if text == "/":
        return ROOT
    path = text[:-1] if text.endswith("/") else text  # one trailing '/' is trimmed
    segments = path[1:].split("/")
    _refuse_oversize(path, segments)
    for segment in segments:
        if not segment:
            msg = f"bad cluster path {quote(text)}: empty segment"
            raise ClusterPathError(msg)
        if segment in (".", ".."):
            msg = f"bad cluster path {quote(text)}: segment {segment!r} is not allowed"
            raise ClusterPathError(msg)
        if not _SEGMENT.fullmatch(segment):
            msg = (
                f"bad cluster path {quote(text)}: segment {quote(segment)} may only hold "
                "letters, digits, '_', '.' and '-'"
            )
            raise ClusterPathError(msg)
    return ClusterPath(path)


def depth(path: str) -> int:
    """Levels below the root: `depth('/') == 0`, `depth('/a/b') == 2`."""
    return 0 if path == ROOT else path.count("/")


def parent(path: str) -> ClusterPath | None:
    """The enclosing cluster, or None for the root."""
    if path == ROOT:
        return None
    cut = path.rfind("/")
    return ClusterPath(path[:cut] if cut > 0 else ROOT)


@functools.lru_cache(maxsize=16384)
def ancestors(path: str) -> tuple[ClusterPath, ...]:
    """The path itself, then each enclosing cluster up to and including the root.

    Costs depth x length: refused (as `parse_cluster` refuses it) for a path over the
    bounds, which only a path that never passed `parse_cluster` can be."""
    if len(path) > MAX_CLUSTER_CHARS or path.count("/") > MAX_CLUSTER_DEPTH:
        _refuse_oversize(path, path[1:].split("/"))
    chain = [ClusterPath(path)]
    up = parent(path)
    while up is not None:
        chain.append(up)
        up = parent(up)
    return tuple(chain)


def is_within(path: str, ancestor: str) -> bool:
    """True when `path` is `ancestor` or lies below it."""
    return ancestor == ROOT or path == ancestor or path.startswith(ancestor + "/")


def common_ancestor(a: str, b: str) -> ClusterPath:
    """The deepest cluster that holds both `a` and `b`."""
    for candidate in ancestors(a):
        if is_within(b, candidate):
            return candidate
    return ROOT  # unreachable for normalised paths: the root holds everything


@functools.lru_cache(maxsize=65536)
def cluster_order(job_cluster: str, worker_cluster: str) -> int:
    """Qube's cluster order of a job in `job_cluster` for a worker in `worker_cluster`.

    1 in the worker's own cluster; otherwise `2 + depth(worker) - depth(LCA)`: every
    boundary crossed away from the root costs one, moving toward the root is free.
    """
    if job_cluster == worker_cluster:
        return 1
    return 2 + depth(worker_cluster) - depth(common_ancestor(job_cluster, worker_cluster))


# --------------------------------------------------------------------------- tree


@attrs.frozen
class ClusterNode:
    """One node of the derived tree, with counts at it and at or below it."""

    path: ClusterPath
    workers_here: int
    jobs_here: int
    workers_total: int
    jobs_total: int


class Member(enum.Enum):
    WORKER = 0
    JOB = 1


class ClusterTree:
    """The cluster tree as membership derives it: a path exists while anything is in it
    or below it. Add and remove cost O(depth)."""

    def __init__(self) -> None:
        # path -> [workers, jobs] directly in it / at or below it
        self._here: dict[ClusterPath, list[int]] = {}
        self._total: dict[ClusterPath, list[int]] = {}
        self._children: dict[ClusterPath, set[ClusterPath]] = {}

    def add(self, path: ClusterPath, member: Member) -> None:
        self._here.setdefault(path, [0, 0])[member.value] += 1
        child: ClusterPath | None = None
        for node in ancestors(path):
            counts = self._total.get(node)
            if counts is None:
                counts = self._total[node] = [0, 0]
                self._children[node] = set()
            counts[member.value] += 1
            if child is not None:
                self._children[node].add(child)
            child = node

    def remove(self, path: ClusterPath, member: Member) -> None:
        here = self._here.get(path)
        if here is None or here[member.value] <= 0:
            msg = f"cluster {path!r} has no {member.name.lower()} to remove"
            raise KeyError(msg)
        here[member.value] -= 1
        if here == [0, 0]:
            del self._here[path]
        child: ClusterPath | None = None
        for node in ancestors(path):
            counts = self._total[node]
            counts[member.value] -= 1
            if child is not None and child not in self._total:
                self._children[node].discard(child)
            if counts == [0, 0]:
                del self._total[node]
                del self._children[node]
            child = node

    def exists(self, path: str) -> bool:
        return path in self._total

    def children(self, path: str) -> list[ClusterPath]:
        return sorted(self._children.get(ClusterPath(path), ()))

    def nodes(self) -> Iterator[ClusterNode]:
        """Every existing cluster, parents before children, siblings in name order."""
        if not self._total:
            return
        stack = [ROOT]
        while stack:
            path = stack.pop()
            here = self._here.get(path, [0, 0])
            total = self._total[path]
            yield ClusterNode(path, here[0], here[1], total[0], total[1])
            stack.extend(sorted(self._children[path], reverse=True))


# --------------------------------------------------------------------------- restrictions


class TermKind(enum.Enum):
    EXACT = "exact"  # /A: exactly /A
    CHILDREN = "children"  # /A/*: the direct children of /A, not /A
    SUBTREE = "subtree"  # /A/+: /A and everything below it; /+ is everything


@attrs.frozen
class RestrictionTerm:
    kind: TermKind
    path: ClusterPath

    def matches(self, cluster: str) -> bool:
        if self.kind is TermKind.EXACT:
            return cluster == self.path
        if self.kind is TermKind.SUBTREE:
            return is_within(cluster, self.path)
        return parent(cluster) == self.path

    def __str__(self) -> str:
        if self.kind is TermKind.EXACT:
            return self.path
        tail = "*" if self.kind is TermKind.CHILDREN else "+"
        return f"/{tail}" if self.path == ROOT else f"{self.path}/{tail}"


_RESTRICTION_TERM = re.compile(r"/[^\s,|]*")
_RESTRICTION_SEP = re.compile(r"\|\||,|or(?=\s)")


@attrs.frozen(cache_hash=True)
class Restrictions:
    """Alternatives of cluster terms; empty means unrestricted. Parse with
    `parse_restrictions`; `str()` gives the canonical text."""

    terms: tuple[RestrictionTerm, ...] = ()
    _answers: dict[str, bool] = attrs.field(
        factory=dict, eq=False, hash=False, repr=False, alias="_answers"
    )

    def __bool__(self) -> bool:
        return bool(self.terms)

    def accepts(self, cluster: str) -> bool:
        if not self.terms:
            return True
        answer = self._answers.get(cluster)
        if answer is None:
            answer = self._answers[cluster] = any(t.matches(cluster) for t in self.terms)
        return answer

    def __str__(self) -> str:
        return " || ".join(str(t) for t in self.terms)


UNRESTRICTED = Restrictions()


def parse_restrictions(text: object) -> Restrictions:
    """Parse `/A || /B/* or /C/+, /+`; refuse malformed input naming the column."""
    if text is None:
        return UNRESTRICTED
    if not isinstance(text, str):
        shown = reprlib.repr(text)  # bounded, however big
        msg = f"bad restrictions {shown}: must be a string such as '/show1/+ || /comp'"
        raise RestrictionError(msg)
    if len(text) > MAX_EXPRESSION_CHARS:
        msg = f"bad restrictions {quote(text)}: longer than {MAX_EXPRESSION_CHARS} characters"
        raise RestrictionError(msg)
    return _parse_restrictions(text)


@functools.lru_cache(maxsize=4096)
def _parse_restrictions(text: str) -> Restrictions:
    terms: list[RestrictionTerm] = []
    pos = _skip_space(text, 0)
    if pos == len(text):
        return UNRESTRICTED
    while True:
        match = _RESTRICTION_TERM.match(text, pos)
        if match is None:
            found = text[pos : pos + 10]
            raise _restriction_error(
                text, pos, f"expected a cluster such as /A, /A/*, /A/+ or /+, found {found!r}"
            )
        terms.append(_restriction_term(text, match.group(), pos))
        pos = _skip_space(text, match.end())
        if pos == len(text):
            break
        sep = _RESTRICTION_SEP.match(text, pos)
        if sep is None:
            found = text[pos : pos + 10]
            raise _restriction_error(
                text, pos, f"expected '||', 'or' or ',' between clusters, found {found!r}"
            )
        pos = _skip_space(text, sep.end())
        if pos == len(text):
            raise _restriction_error(text, pos, f"a cluster must follow {sep.group()!r}")
    unique = tuple(dict.fromkeys(terms))
    return Restrictions(unique)


def _restriction_error(text: str, at: int, why: str) -> RestrictionError:
    return RestrictionError(f"bad restrictions {quote(text)} at column {at + 1}: {why}")


def _restriction_term(text: str, word: str, at: int) -> RestrictionTerm:
    if "//" in word:
        raise _restriction_error(text, at, f"{quote(word)} has an empty segment ('//')")
    if word.endswith(("/+", "/*")):
        kind = TermKind.SUBTREE if word.endswith("+") else TermKind.CHILDREN
        base = word[:-2] or "/"
    else:
        kind, base = TermKind.EXACT, word
    try:
        path = parse_cluster(base)
    except ClusterPathError as exc:
        why = f"{quote(word)} is not a cluster, /A/* or /A/+ ({exc})"
        raise _restriction_error(text, at, why) from None
    return RestrictionTerm(kind, path)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


# --------------------------------------------------------------------------- patterns

_PATTERN_PREFIX = re.compile(r"/(?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_.-]*")


@attrs.frozen
class CrossClusterPatterns:
    """Where a job ranks with cluster order 1 besides its own cluster (Qube 6.9).

    `exact` entries name one cluster; `prefixes` are string prefixes (`/showA+` keeps
    `/showA`, which also matches `/showAB`, as Qube documents).
    """

    exact: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)

    def matches(self, cluster: str) -> bool:
        return cluster in self.exact or cluster.startswith(self.prefixes)

    def __str__(self) -> str:
        return ",".join([*sorted(self.exact), *(p + "+" for p in self.prefixes)])


NO_PATTERNS = CrossClusterPatterns()


def parse_patterns(text: object) -> CrossClusterPatterns:
    """Parse `/showA+,/showB/comp`; refuse malformed entries naming them."""
    if text is None:
        return NO_PATTERNS
    if not isinstance(text, str):
        shown = reprlib.repr(text)  # bounded, however big
        msg = f"bad cross-cluster patterns {shown}: must be a string such as '/showA+,/showB'"
        raise PatternError(msg)
    if len(text) > MAX_EXPRESSION_CHARS:
        msg = (
            f"bad cross-cluster patterns {quote(text)}: longer than "
            f"{MAX_EXPRESSION_CHARS} characters"
        )
        raise PatternError(msg)
    return _parse_patterns(text)


@functools.lru_cache(maxsize=4096)
def _parse_patterns(text: str) -> CrossClusterPatterns:
    if not text.strip():
        return NO_PATTERNS
    exact: set[str] = set()
    prefixes: list[str] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            msg = f"bad cross-cluster patterns {quote(text)}: empty entry"
            raise PatternError(msg)
        if entry.endswith("+"):
            prefix = entry[:-1]
            # a prefix is bounded as a path is: it stands for paths that start with it
            # `/showA/+` keeps `/showA/`: its trailing '/' starts no level of its own
            why = _oversize(prefix, prefix[1:].removesuffix("/").split("/"))
            if why is not None:
                msg = f"bad cross-cluster patterns {quote(text)}: entry {quote(entry)}: {why}"
                raise PatternError(msg)
            if not _PATTERN_PREFIX.fullmatch(prefix):
                msg = (
                    f"bad cross-cluster patterns {quote(text)}: entry {quote(entry)} must be "
                    "a cluster or cluster prefix followed by '+', such as '/showA+'"
                )
                raise PatternError(msg)
            if prefix not in prefixes:
                prefixes.append(prefix)
        else:
            try:
                exact.add(parse_cluster(entry))
            except ClusterPathError as exc:
                msg = f"bad cross-cluster patterns {quote(text)}: {exc}"
                raise PatternError(msg) from None
    return CrossClusterPatterns(frozenset(exact), tuple(prefixes))
