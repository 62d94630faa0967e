"""Cluster paths, the derived tree, cluster order, patterns and restrictions."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farmd.cluster import (
    MAX_CLUSTER_CHARS,
    MAX_CLUSTER_DEPTH,
    MAX_EXPRESSION_CHARS,
    MAX_SEGMENT_CHARS,
    ClusterNode,
    ClusterPath,
    ClusterTree,
    Member,
    ancestors,
    cluster_order,
    depth,
    parse_cluster,
    parse_patterns,
    parse_restrictions,
)
from farmd.errors import ClusterPathError, PatternError, RestrictionError, UserError
from tests.strategies import PROPERTY_SETTINGS, cluster_paths, with_ancestors

# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/", "/"),
        ("/show1", "/show1"),
        ("/show1/lighting", "/show1/lighting"),
        ("/show1/lighting/", "/show1/lighting"),  # one trailing '/' is trimmed
        ("/a/", "/a"),
        ("/Show_1.v2-final/A9", "/Show_1.v2-final/A9"),
        ("/...", "/..."),  # only '.' and '..' themselves are refused
        ("/.hidden", "/.hidden"),
    ],
)
def test_valid_paths_are_normalised(text: str, expected: str) -> None:
    assert parse_cluster(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "show1",
        "show1/lighting",
        "",
        " /a",
        "/a b",
        "/a//b",
        "//",
        "/a//",
        "/a/../b",
        "/..",
        "/a/./b",
        "/.",
        "/a\tb",
        "/a\n",
        "/é",
        "/a/*",
        "/a+",
        "\\a",
    ],
)
def test_invalid_paths_are_refused_quoting_the_input(text: str) -> None:
    with pytest.raises(ClusterPathError, match=re.escape(repr(text))):
        parse_cluster(text)


@pytest.mark.parametrize("value", [None, 5, b"/a", ["/a"]])
def test_a_path_that_is_not_a_string_is_refused_quoting_it(value: object) -> None:
    with pytest.raises(ClusterPathError, match=re.escape(repr(value))):
        parse_cluster(value)


def test_path_errors_are_user_errors() -> None:
    with pytest.raises(UserError):
        parse_cluster("show1")


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/", 0), ("/show1", 1), ("/show1/lighting", 2), ("/a/b/c/d", 4)],
)
def test_depth_counts_levels_below_the_root(path: str, expected: int) -> None:
    assert depth(path) == expected


# --------------------------------------------------------------------------- cluster order


@pytest.mark.parametrize(
    ("job_cluster", "expected"),
    [
        ("/A/B/C", 1),  # the worker's own cluster
        ("/A/B/C/D", 2),  # below it: one boundary away from the root
        ("/A/B/C/D/E", 2),  # further below costs no more
        ("/A/B", 3),
        ("/A/B/F", 3),  # a sibling branch meets at /A/B
        ("/A", 4),
        ("/", 5),
        ("/G", 5),  # meets at the root
        ("/A/BC", 4),  # a string prefix of /A/B/C is not an ancestor: meets at /A
        ("/A/B/CD", 3),
    ],
)
def test_cluster_order_for_a_worker_in_a_b_c(job_cluster: str, expected: int) -> None:
    assert cluster_order(job_cluster, "/A/B/C") == expected


@pytest.mark.parametrize(
    ("job_cluster", "worker_cluster", "expected"),
    [
        ("/", "/", 1),
        ("/x", "/", 2),
        ("/x/y", "/", 2),
        ("/", "/x", 3),
        ("/y", "/x", 3),
        ("/x", "/x/y", 3),
    ],
)
def test_cluster_order_near_the_root(job_cluster: str, worker_cluster: str, expected: int) -> None:
    assert cluster_order(job_cluster, worker_cluster) == expected


def test_seed_jobs_in_two_other_clusters_rank_alike() -> None:
    # "If job1 is submitted to /A and job2 to /B, then they both will have the same
    # priority in /C."
    assert cluster_order("/A", "/C") == cluster_order("/B", "/C")


def test_seed_job_in_the_root_ranks_like_one_in_another_cluster() -> None:
    # "If job1 is submitted to / and job2 to /B, then still both of them have the same
    # priority in /C."
    assert cluster_order("/", "/C") == cluster_order("/B", "/C")


def test_seed_job_nearer_the_worker_ranks_first() -> None:
    # "If job1 is submitted to /A and job2 to /B, then jobA will have higher priority than
    # jobB in /A/C": /A -> /A/C crosses one boundary, /B -> / -> /A -> /A/C two.
    assert cluster_order("/A", "/A/C") == 3
    assert cluster_order("/B", "/A/C") == 4


# --------------------------------------------------------------------------- the tree


def _exists(tree: ClusterTree, *paths: str) -> list[bool]:
    return [tree.exists(path) for path in paths]


def test_an_empty_farm_has_no_clusters() -> None:
    tree = ClusterTree()
    assert not tree.exists("/")
    assert list(tree.nodes()) == []
    assert tree.children("/") == []


def test_a_member_brings_its_cluster_and_ancestors_into_being() -> None:
    tree = ClusterTree()
    tree.add(parse_cluster("/show1/lighting"), Member.WORKER)
    assert _exists(tree, "/", "/show1", "/show1/lighting") == [True, True, True]
    assert _exists(tree, "/show1/modelling", "/show2", "/show1/lighting/x") == [False] * 3
    assert tree.children("/") == ["/show1"]
    assert tree.children("/show1") == ["/show1/lighting"]
    assert tree.children("/show1/lighting") == []


def test_a_cluster_vanishes_when_its_last_member_leaves() -> None:
    tree = ClusterTree()
    lighting = parse_cluster("/show1/lighting")
    tree.add(lighting, Member.WORKER)
    tree.add(lighting, Member.WORKER)
    tree.add(lighting, Member.JOB)
    tree.remove(lighting, Member.WORKER)
    tree.remove(lighting, Member.WORKER)
    assert tree.exists("/show1/lighting")  # the job still holds it
    tree.remove(lighting, Member.JOB)
    assert _exists(tree, "/", "/show1", "/show1/lighting") == [False, False, False]
    assert list(tree.nodes()) == []


def test_ancestors_exist_while_anything_below_them_exists() -> None:
    tree = ClusterTree()
    tree.add(parse_cluster("/a"), Member.JOB)
    tree.add(parse_cluster("/a/b/c"), Member.WORKER)
    tree.add(parse_cluster("/a/x"), Member.JOB)
    tree.remove(parse_cluster("/a"), Member.JOB)
    assert _exists(tree, "/", "/a", "/a/b", "/a/b/c", "/a/x") == [True] * 5
    tree.remove(parse_cluster("/a/b/c"), Member.WORKER)
    assert _exists(tree, "/", "/a", "/a/b", "/a/b/c", "/a/x") == [True, True, False, False, True]
    assert tree.children("/a") == ["/a/x"]
    assert tree.children("/a/b") == []


def test_nodes_count_members_at_and_below_each_cluster() -> None:
    tree = ClusterTree()
    for path, member in [
        ("/show1/lighting", Member.WORKER),
        ("/show1/lighting", Member.WORKER),
        ("/show1/modelling", Member.WORKER),
        ("/show1/lighting", Member.JOB),
        ("/show1", Member.JOB),
        ("/show2/lighting", Member.JOB),
        ("/", Member.WORKER),
    ]:
        tree.add(parse_cluster(path), member)
    # parents before children, siblings in name order
    assert list(tree.nodes()) == [
        ClusterNode(parse_cluster("/"), 1, 0, 4, 3),
        ClusterNode(parse_cluster("/show1"), 0, 1, 3, 2),
        ClusterNode(parse_cluster("/show1/lighting"), 2, 1, 2, 1),
        ClusterNode(parse_cluster("/show1/modelling"), 1, 0, 1, 0),
        ClusterNode(parse_cluster("/show2"), 0, 0, 0, 1),
        ClusterNode(parse_cluster("/show2/lighting"), 0, 1, 0, 1),
    ]


def test_removing_a_member_that_is_not_there_is_refused_and_changes_nothing() -> None:
    tree = ClusterTree()
    tree.add(parse_cluster("/a"), Member.WORKER)
    before = list(tree.nodes())
    with pytest.raises(KeyError, match="/a"):
        tree.remove(parse_cluster("/a"), Member.JOB)  # /a holds a worker, not a job
    with pytest.raises(KeyError, match="/b"):
        tree.remove(parse_cluster("/b"), Member.WORKER)
    with pytest.raises(KeyError, match="'/'"):
        tree.remove(parse_cluster("/"), Member.WORKER)  # /a's worker is not in / itself
    assert list(tree.nodes()) == before


memberships = st.lists(st.tuples(cluster_paths(), st.sampled_from(Member)), max_size=20)


@PROPERTY_SETTINGS
@given(added=memberships, data=st.data())
def test_tree_is_exactly_what_current_membership_derives(
    added: list[tuple[str, Member]], data: st.DataObject
) -> None:
    tree = ClusterTree()
    for path, member in added:
        tree.add(parse_cluster(path), member)
    leaving = data.draw(st.sets(st.sampled_from(range(len(added)))) if added else st.just(set()))
    for n in sorted(leaving):
        path, member = added[n]
        tree.remove(parse_cluster(path), member)
    staying = [pair for n, pair in enumerate(added) if n not in leaving]

    here = Counter(staying)
    expected = []
    for node in with_ancestors(path for path, _ in staying) if staying else ():
        below = [(p, m) for p, m in staying if node == "/" or (p + "/").startswith(node + "/")]
        expected.append(
            (
                node,
                here[(node, Member.WORKER)],
                here[(node, Member.JOB)],
                sum(m is Member.WORKER for _, m in below),
                sum(m is Member.JOB for _, m in below),
            )
        )
    got = [
        (n.path, n.workers_here, n.jobs_here, n.workers_total, n.jobs_total) for n in tree.nodes()
    ]
    assert sorted(got) == expected
    alive = {row[0] for row in expected}
    for node in with_ancestors(path for path, _ in added):
        assert tree.exists(node) == (node in alive)


# --------------------------------------------------------------------------- patterns


@pytest.mark.parametrize(
    ("text", "cluster", "expected"),
    [
        ("/+", "/", True),
        ("/+", "/anything/at/all", True),
        ("/showA+", "/showA", True),
        ("/showA+", "/showA/lighting", True),
        ("/showA+", "/showAB", True),  # a string prefix, as Qube documents
        ("/showA+", "/showB", False),
        ("/showA+", "/show", False),
        ("/showA+", "/", False),
        ("/showA+", "/x/showA", False),
        ("/showA/+", "/showA/lighting", True),
        ("/showA/+", "/showA", False),  # the text before '+' is '/showA/'
        ("/showA", "/showA", True),
        ("/showA", "/showA/lighting", False),  # an exact entry is that one cluster
        ("/showA", "/showAB", False),
        ("/showA", "/", False),
        ("/showA/", "/showA", True),  # a trailing '/' is trimmed, as for paths
        ("/", "/", True),
        ("/", "/showA", False),
        ("/showA+,/showB+", "/showB/comp", True),
        ("/showA+,/showB+", "/showC", False),
        ("/showA+, /showB", "/showB", True),
        ("/showA+, /showB", "/showB/comp", False),
        (" /x , /y+ ", "/yz", True),
        ("", "/", False),
        ("  ", "/showA", False),
        (None, "/showA", False),
    ],
)
def test_pattern_matching(text: str | None, cluster: str, expected: bool) -> None:
    assert parse_patterns(text).matches(cluster) is expected


def test_no_patterns_is_falsy_and_some_are_truthy() -> None:
    assert not parse_patterns("")
    assert not parse_patterns(None)
    assert parse_patterns("/+")
    assert parse_patterns("/a")


@pytest.mark.parametrize(
    "text", ["showA+", "/a,,/b", ",/a", "/a,", "/a b", "/a b+", "+", "/a//+", "/a/../b", "show"]
)
def test_malformed_patterns_are_refused_quoting_the_input(text: str) -> None:
    with pytest.raises(PatternError, match=re.escape(repr(text))):
        parse_patterns(text)


def test_patterns_that_are_not_a_string_are_refused() -> None:
    with pytest.raises(PatternError, match=re.escape(repr(["/a"]))):
        parse_patterns(["/a"])


# --------------------------------------------------------------------------- restrictions


@pytest.mark.parametrize(
    ("text", "cluster", "expected"),
    [
        ("/A", "/A", True),
        ("/A", "/A/x", False),  # exactly /A
        ("/A", "/AB", False),
        ("/A", "/", False),
        ("/A/*", "/A/x", True),
        ("/A/*", "/A/y", True),
        ("/A/*", "/A", False),  # the children of /A, not /A
        ("/A/*", "/A/x/y", False),  # only the direct children
        ("/A/*", "/AB/x", False),
        ("/A/+", "/A", True),
        ("/A/+", "/A/x", True),
        ("/A/+", "/A/x/y/z", True),
        ("/A/+", "/AB", False),  # below /A in the tree, not by string prefix
        ("/A/+", "/", False),
        ("/+", "/", True),
        ("/+", "/A/x/y", True),
        ("/*", "/A", True),
        ("/*", "/", False),
        ("/*", "/A/x", False),
        ("/", "/", True),
        ("/", "/A", False),
        ("/A/x/*", "/A/x/y", True),
        ("/A || /B", "/B", True),
        ("/A or /B", "/B", True),
        ("/A, /B", "/B", True),
        ("/A,/B/*||/C/+ or /D", "/B/x", True),
        ("/A,/B/*||/C/+ or /D", "/C/x/y", True),
        ("/A,/B/*||/C/+ or /D", "/D", True),
        ("/A,/B/*||/C/+ or /D", "/B", False),
        ("/A,/B/*||/C/+ or /D", "/E", False),
        ("/nowhere/+", "/A", False),  # naming a cluster that does not exist is fine
        ("", "/A", True),  # empty means unrestricted
        ("   ", "/A/x", True),
        (None, "/", True),
    ],
)
def test_restriction_matching(text: str | None, cluster: str, expected: bool) -> None:
    assert parse_restrictions(text).accepts(cluster) is expected


def test_restrictions_are_truthy_only_when_they_restrict() -> None:
    assert not parse_restrictions("")
    assert not parse_restrictions(None)
    assert parse_restrictions("/+")


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("||", 1),
        ("A", 1),
        ("/A || B", 7),
        ("/A |/B", 4),
        ("/A /B", 4),
        ("/A ||", 6),
        ("/A or", 4),
        ("/A, ,/B", 5),
        ("/A,/B,", 7),
        ("/A/**", 1),
        ("/A || /B/+x", 7),
        ("/A || /a b", 10),
        ("/A || /B//C", 7),
        ("/A && /B", 4),
    ],
)
def test_malformed_restrictions_point_at_the_bad_part(text: str, column: int) -> None:
    with pytest.raises(RestrictionError) as caught:
        parse_restrictions(text)
    message = str(caught.value)
    assert repr(text) in message
    assert re.search(rf"\bcolumn {column}\b", message), message


def test_restrictions_that_are_not_a_string_are_refused() -> None:
    with pytest.raises(RestrictionError, match=re.escape(repr(42))):
        parse_restrictions(42)


# --------------------------------------------------------------------------- bounds

DEEPEST = "/" + "/".join(f"l{i}" for i in range(MAX_CLUSTER_DEPTH))  # 16 levels
# the 40 KB submit that once took the supervisor to 20 GB: 20,000 levels
POISON = "/a" * 20_000


def test_the_bounds_admit_a_path_at_each_limit() -> None:
    assert parse_cluster(DEEPEST) == DEEPEST
    assert parse_cluster("/" + "s" * MAX_SEGMENT_CHARS) == "/" + "s" * MAX_SEGMENT_CHARS
    longest = "/" + "/".join(["x" * 63] * 4)  # 4 + 4 x 63 = 256 characters
    assert len(longest) == MAX_CLUSTER_CHARS
    assert parse_cluster(longest) == longest
    assert parse_cluster(longest + "/") == longest  # the trailing '/' is trimmed first


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (DEEPEST + "/x", "17 levels deep, at most 16 are allowed"),
        ("/" + "s" * (MAX_SEGMENT_CHARS + 1), "is longer than 64 characters"),
        ("/" + "/".join(["x" * 64] * 4), "longer than 256 characters"),
        (POISON, "(40000 characters): longer than 256 characters"),
    ],
)
def test_a_path_over_a_bound_is_refused_naming_the_limit(text: str, why: str) -> None:
    with pytest.raises(ClusterPathError) as refused:
        parse_cluster(text)
    message = str(refused.value)
    assert why in message
    assert message.startswith(f"bad cluster path {text[:30]!r}"[:-1])  # names the value
    assert len(message) < 250  # ... cut short: one readable line


def test_restrictions_and_patterns_bound_their_paths_and_their_length() -> None:
    too_deep = DEEPEST + "/x"
    for text in (too_deep, f"{too_deep}/+", f"{too_deep}/*", f"/a || {too_deep}/+"):
        with pytest.raises(RestrictionError, match="17 levels deep, at most 16"):
            parse_restrictions(text)
    for text in (too_deep, f"{too_deep}+", f"{too_deep}/+", f"/a,{too_deep}y+"):
        with pytest.raises(PatternError, match="17 levels deep, at most 16"):
            parse_patterns(text)
    # a '+' prefix is a string prefix: bounded as a path is, in length and segments too
    with pytest.raises(PatternError, match="longer than 4096 characters"):
        parse_patterns(POISON + "+")  # the whole text first
    with pytest.raises(PatternError, match="longer than 256 characters"):
        parse_patterns("/a" * 200 + "+")
    with pytest.raises(PatternError, match="longer than 64 characters"):
        parse_patterns("/show" + "A" * 64 + "+")
    many = " || ".join(f"/s{i}" for i in range(1000))  # 6,000 characters
    with pytest.raises(RestrictionError, match=f"longer than {MAX_EXPRESSION_CHARS} characters"):
        parse_restrictions(many)
    with pytest.raises(PatternError, match=f"longer than {MAX_EXPRESSION_CHARS} characters"):
        parse_patterns(many.replace(" || ", ","))
    # each at its limit is accepted
    assert parse_restrictions(f"{DEEPEST}/+").accepts(DEEPEST)
    assert parse_patterns(f"{DEEPEST}+").matches(DEEPEST)


def test_ancestors_and_the_tree_never_take_an_unbounded_path() -> None:
    # a path that skipped parse_cluster (a bad stored row) is refused, not expanded into
    # 20,000 ancestors of up to 40,000 characters each
    with pytest.raises(ClusterPathError, match="longer than 256"):
        ancestors(POISON)
    with pytest.raises(ClusterPathError, match="17 levels deep"):
        ancestors(DEEPEST + "/x")
    tree = ClusterTree()
    with pytest.raises(ClusterPathError):
        tree.add(ClusterPath(POISON), Member.JOB)
    assert list(tree.nodes()) == []
    # the deepest path is cheap: 17 nodes, none of them recursed into
    assert len(ancestors(DEEPEST)) == MAX_CLUSTER_DEPTH + 1
    tree.add(parse_cluster(DEEPEST), Member.WORKER)
    assert [node.path for node in tree.nodes()] == list(reversed(ancestors(DEEPEST)))
    assert cluster_order(DEEPEST, "/") == 2
