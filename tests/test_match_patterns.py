"""EventBridge event patterns (walq.match.compile_pattern, walq.pattern_matches):
every operator, arrays and nesting, validation texts, and the index agreeing
with one-by-one evaluation."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import walq
from walq.match import Matcher, compile_pattern

PREFIX = "Event pattern is not valid. Reason: "

EVENT = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "111122223333",
    "time": "2017-12-22T18:43:48Z",
    "region": "us-west-1",
    "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {
        "instance-id": "i-1234567890abcdef0",
        "state": "terminated",
        "c-count": 5,
        "d-count": 3.5,
        "x-limit": 301.8,
        "source-ip": "10.0.0.123",
        "ipv6": "2001:db8::abcd",
        "flag": True,
        "nothing": None,
        "tags": ["blue", "prod-eu"],
        "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 0}],
        "file": "dir/report.PDF",
    },
}


def ok(pattern, event=EVENT):
    return walq.pattern_matches(pattern, event)


def refused(pattern):
    with pytest.raises(walq.InvalidPattern) as info:
        compile_pattern(pattern)
    return str(info.value)


def test_exact_strings_numbers_booleans_and_null():
    assert ok({"source": ["aws.ec2"], "detail": {"state": ["running", "terminated"]}})
    assert not ok({"source": ["aws.s3"]})
    assert ok({"detail": {"c-count": [5]}})
    assert ok({"detail": {"c-count": [5.0]}})
    assert not ok({"detail": {"c-count": ["5"]}})
    assert ok({"detail": {"flag": [True]}})
    assert not ok({"detail": {"flag": [1]}})
    assert not ok({"detail": {"c-count": [True]}})
    assert ok({"detail": {"nothing": [None]}})
    assert not ok({"detail": {"missing": [None]}})


def test_prefix_and_prefix_ignoring_case():
    assert ok({"region": [{"prefix": "us-"}]})
    assert not ok({"region": [{"prefix": "US-"}]})
    assert ok({"region": [{"prefix": {"equals-ignore-case": "US-"}}]})


def test_suffix_and_suffix_ignoring_case():
    assert not ok({"detail": {"file": [{"suffix": ".pdf"}]}})
    assert ok({"detail": {"file": [{"suffix": ".PDF"}]}})
    assert ok({"detail": {"file": [{"suffix": {"equals-ignore-case": ".pdf"}}]}})


def test_equals_ignore_case():
    assert ok({"detail": {"state": [{"equals-ignore-case": "TERMINATED"}]}})
    assert not ok({"detail": {"state": [{"equals-ignore-case": "TERMINATE"}]}})


def test_anything_but_values():
    assert ok({"detail": {"state": [{"anything-but": "running"}]}})
    assert not ok({"detail": {"state": [{"anything-but": ["running", "terminated"]}]}})
    assert ok({"detail": {"c-count": [{"anything-but": [1, 2]}]}})
    assert not ok({"detail": {"c-count": [{"anything-but": 5}]}})
    assert not ok({"detail": {"missing": [{"anything-but": "x"}]}})


def test_anything_but_prefix_suffix_wildcard_and_ignore_case():
    assert ok({"detail": {"state": [{"anything-but": {"prefix": "run"}}]}})
    assert not ok({"detail": {"state": [{"anything-but": {"prefix": "term"}}]}})
    assert not ok({"detail": {"state": [{"anything-but": {"suffix": "nated"}}]}})
    assert ok({"detail": {"state": [{"anything-but": {"suffix": ["ing", "xx"]}}]}})
    assert not ok({"detail": {"state": [{"anything-but": {"wildcard": "t*d"}}]}})
    assert ok({"detail": {"state": [{"anything-but": {"wildcard": "r*"}}]}})
    assert not ok({"detail": {"state": [{"anything-but": {"equals-ignore-case": ["RUNNING", "Terminated"]}}]}})
    assert ok({"detail": {"state": [{"anything-but": {"equals-ignore-case": "RUNNING"}}]}})


def test_numeric():
    assert ok({"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}], "d-count": [{"numeric": ["<", 10]}],
                          "x-limit": [{"numeric": ["=", 3.018e2]}]}})
    assert not ok({"detail": {"c-count": [{"numeric": [">", 5]}]}})
    assert not ok({"detail": {"state": [{"numeric": [">", 0]}]}})
    assert not ok({"detail": {"flag": [{"numeric": [">", 0]}]}})  # true is not 1
    assert ok({"n": [{"numeric": [">", 1e12]}]}, {"n": 2e12})  # EventBridge has no SNS range cap


def test_cidr():
    assert ok({"detail": {"source-ip": [{"cidr": "10.0.0.0/24"}]}})
    assert not ok({"detail": {"source-ip": [{"cidr": "10.0.1.0/24"}]}})
    assert ok({"detail": {"ipv6": [{"cidr": "2001:db8::/64"}]}})


def test_exists():
    assert ok({"detail": {"state": [{"exists": True}]}})
    assert ok({"detail": {"missing": [{"exists": False}]}})
    assert not ok({"detail": {"state": [{"exists": False}]}})
    assert not ok({"detail": {"missing": [{"exists": True}]}})
    # Only leaves exist: an object or an empty array is not a value.
    assert not ok({"detail": [{"exists": True}]})
    assert ok({"x": [{"exists": False}]}, {"x": []})


def test_wildcard():
    assert ok({"resources": [{"wildcard": "arn:aws:ec2:*:*:instance/*"}]})
    assert not ok({"resources": [{"wildcard": "arn:aws:s3:*"}]})
    assert ok({"detail": {"state": [{"wildcard": "term*nated"}]}})
    assert ok({"detail": {"state": [{"wildcard": "terminated*"}]}})  # * matches nothing too
    assert ok({"a": [{"wildcard": "x\\*y"}]}, {"a": "x*y"})
    assert not ok({"a": [{"wildcard": "x\\*y"}]}, {"a": "xzy"})


def test_or():
    pattern = {"source": ["aws.ec2"], "$or": [{"detail": {"state": ["running"]}},
                                              {"detail": {"c-count": [{"numeric": [">", 4]}]}}]}
    assert ok(pattern)
    pattern["$or"][1]["detail"]["c-count"][0]["numeric"][1] = 5
    assert not ok(pattern)


def test_nested_or():
    assert ok({"detail": {"$or": [{"state": ["x"]}, {"flag": [True]}]}})


def test_arrays_match_if_any_element_matches():
    assert ok({"detail": {"tags": ["prod-eu"]}})
    assert ok({"detail": {"tags": [{"prefix": "prod"}]}})
    assert ok({"detail": {"items": {"sku": [{"prefix": "B-"}], "qty": [{"numeric": [">=", 0]}]}}})
    assert not ok({"detail": {"items": {"sku": ["C-1"]}}})


def test_fields_in_one_array_of_objects_must_match_in_the_same_element():
    # event-ruler's array consistency: A-1 has qty 2, B-7 has qty 0.
    assert ok({"detail": {"items": {"sku": ["A-1"], "qty": [2]}}})
    assert not ok({"detail": {"items": {"sku": ["A-1"], "qty": [0]}}})
    assert not ok({"detail": {"items": {"sku": [{"prefix": "B-"}], "qty": [{"numeric": [">", 1]}]}}})
    # Fields outside the array, or in different arrays, are not tied to an element.
    assert ok({"detail": {"state": ["terminated"], "items": {"qty": [0]}, "tags": ["blue"]}})
    nested = {"a": [{"b": [{"c": 1, "d": 2}, {"c": 3, "d": 4}]}, {"b": [{"c": 5, "d": 6}]}]}
    assert ok({"a": {"b": {"c": [3], "d": [4]}}}, nested)
    assert not ok({"a": {"b": {"c": [3], "d": [6]}}}, nested)
    assert not ok({"a": {"b": {"c": [1], "d": [4]}}}, nested)


def test_array_consistency_ties_a_field_named_twice_and_ignores_empty_arrays():
    event = {"items": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": 0}], "resources": [], "state": "x"}
    # "sku" directly and "qty" inside $or: still one element for both.
    assert not ok({"items": {"sku": ["A"]}, "$or": [{"items": {"qty": [0]}}, {"nope": ["y"]}]}, event)
    assert ok({"items": {"sku": ["B"]}, "$or": [{"items": {"qty": [0]}}, {"nope": ["y"]}]}, event)
    # One arrayed field beside fields outside any array: nothing to tie.
    assert ok({"items": {"qty": [0]}, "state": ["x"]}, event)
    m = Matcher("pattern")
    m.add("a", {"state": ["x"], "resources": [{"exists": False}]})
    m.add("b", {"items": {"sku": ["A"], "qty": [0]}})
    assert m.match(event) == {"a"}
    assert m.match({"state": "x", "resources": [], "items": []}) == {"a"}


def test_dotted_keys_name_nested_fields():
    assert ok({"detail.state": ["terminated"]})


def test_json_text_pattern_and_event():
    assert walq.pattern_matches(json.dumps({"source": ["aws.ec2"]}), json.dumps(EVENT))
    assert not walq.pattern_matches({"source": ["aws.ec2"]}, "not json")


def test_empty_pattern_matches_any_event():
    assert ok({})


# --- validation -------------------------------------------------------------

def test_leaf_must_be_an_array_or_object():
    assert refused({"source": "aws.ec2"}) == PREFIX + '"source" must be an object or an array'


def test_empty_array_refused():
    assert refused({"source": []}) == PREFIX + "Empty arrays are not allowed"


def test_unknown_operator():
    assert refused({"a": [{"contains": "x"}]}) == PREFIX + "Unrecognized match type contains"


def test_numeric_must_be_an_array():
    assert refused({"a": [{"numeric": 5}]}) == PREFIX + "Value of numeric must be an array."
    assert refused({"a": [{"numeric": [">", 5, "<", 1]}]}) == PREFIX + "Bottom must be less than top"


def test_exists_must_be_boolean():
    assert refused({"a": [{"exists": "true"}]}) == PREFIX + "exists match pattern must be either true or false."


def test_wildcard_validation():
    assert refused({"a": [{"wildcard": "a**b"}]}) == PREFIX + "Consecutive wildcard characters at pos 2"
    assert refused({"a": [{"wildcard": 3}]}) == PREFIX + "wildcard match pattern must be a string"
    assert refused({"a": [{"wildcard": "*a*b*c*d*e*"}]}).startswith(PREFIX + "Rule is too complex")


def test_prefix_takes_only_equals_ignore_case_inside():
    assert refused({"a": [{"prefix": {"suffix": "x"}}]}) == PREFIX + "Unsupported prefix pattern: suffix"
    assert refused({"a": [{"prefix": {"equals-ignore-case": 1}}]}) == \
        PREFIX + "equals-ignore-case match pattern must be a string"


def test_anything_but_validation():
    assert refused({"a": [{"anything-but": {"numeric": [">", 1]}}]}) == PREFIX + "Unsupported anything-but pattern: numeric"
    assert refused({"a": [{"anything-but": {"equals-ignore-case": [1]}}]}) == \
        PREFIX + "Inside anything-but/equals-ignore-case list, number|start|null|boolean is not supported."
    assert refused({"a": [{"anything-but": [True]}]}) == \
        PREFIX + "Inside anything but list, start|null|boolean is not supported."


def test_or_must_list_objects():
    assert refused({"$or": "x"}) == PREFIX + '"$or" must be an array of objects'


def test_bad_json_and_non_object():
    assert refused("{").startswith(PREFIX + "Filter is not valid JSON")
    assert refused('"x"') == PREFIX + "Filter is not an object"


# --- equivalence over nested patterns and events ----------------------------

_WORDS = ["a", "aB", "Abc", "B", "b", "10.1.2.3", "x*y"]
_NUMS = [0, 1, 2.5, -3]
_scalar = st.one_of(st.sampled_from(_WORDS), st.sampled_from(_NUMS), st.booleans(), st.none())
_cond = st.one_of(
    _scalar,
    st.builds(lambda w: {"prefix": w}, st.sampled_from(_WORDS)),
    st.builds(lambda w: {"prefix": {"equals-ignore-case": w}}, st.sampled_from(_WORDS)),
    st.builds(lambda w: {"suffix": {"equals-ignore-case": w}}, st.sampled_from(_WORDS)),
    st.builds(lambda w: {"wildcard": w}, st.sampled_from(["a*", "*b", "a*c", "*", "x\\*y"])),
    st.builds(lambda w: {"anything-but": {"wildcard": w}}, st.sampled_from(["a*", "*c"])),
    st.builds(lambda w: {"anything-but": {"equals-ignore-case": w}}, st.sampled_from(_WORDS)),
    st.builds(lambda op, v: {"numeric": [op, v]}, st.sampled_from([">", "<=", "="]), st.sampled_from(_NUMS)),
    st.builds(lambda b: {"exists": b}, st.booleans()),
    st.just({"cidr": "10.0.0.0/8"}),
)
_leaf = st.lists(_cond, min_size=1, max_size=3)
_pattern = st.recursive(
    st.dictionaries(st.sampled_from(["p", "q"]), _leaf, min_size=1, max_size=2),
    lambda inner: st.dictionaries(st.sampled_from(["p", "q", "n"]), st.one_of(_leaf, inner), min_size=1, max_size=2)
    | st.builds(lambda alts: {"$or": alts}, st.lists(inner, min_size=2, max_size=3)),
    max_leaves=5,
)
_event_value = st.recursive(
    st.one_of(_scalar, st.lists(_scalar, max_size=3)),
    lambda inner: st.dictionaries(st.sampled_from(["p", "q", "n"]), inner, max_size=3) | st.lists(inner, max_size=2),
    max_leaves=5,
)
# Arrays of objects with the same keys, so that array consistency gets exercised.
_records = st.lists(st.dictionaries(st.sampled_from(["p", "q"]), _scalar, min_size=1), min_size=2, max_size=3)
_event = st.dictionaries(st.sampled_from(["p", "q", "n"]), st.one_of(_event_value, _records), max_size=3)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_pattern, min_size=1, max_size=8), st.lists(_event, min_size=1, max_size=6))
def test_matcher_equals_one_by_one_evaluation(patterns, events):
    compiled = {}
    for i, pattern in enumerate(patterns):
        try:
            compiled[i] = compile_pattern(pattern)
        except walq.InvalidPattern:
            pass
    m = Matcher("pattern")
    for key, policy in compiled.items():
        m.add(key, policy)
    for event in events:
        assert m.match(event) == {k for k, p in compiled.items() if p.matches(event)}


def test_or_expansion_is_bounded():
    alternatives = [{"a": ["x"]}, {"b": ["y"]}, {"c": ["z"]}, {"d": ["w"]}]
    pattern = {f"k{i}": {"$or": alternatives} for i in range(7)}  # 4**7 branches
    assert refused(pattern).startswith(PREFIX + "Rule is too complex")


def test_branches_filed_under_two_exact_fields_match_as_one_by_one():
    # Many rules of exact values on two or three fields (EventBridge's usual
    # source + detail-type): the index files each under a pair of values.
    rng = random.Random(5)
    values = ["a", "b", "c", 1, 2.0, True, None]
    fields = ["source", "detail-type", "region"]
    compiled = {}
    for i in range(300):
        pattern = {f: rng.sample(values, rng.choice((1, 2))) for f in rng.sample(fields, rng.choice((2, 3)))}
        if rng.random() < 0.2:
            pattern["$or"] = [{"region": [rng.choice(values)]}, {"detail": {"n": [{"numeric": [">", 1]}]}}]
        compiled[i] = compile_pattern(pattern)
    m = Matcher("pattern")
    for key, policy in compiled.items():
        m.add(key, policy)
    for _ in range(500):
        event = {f: rng.choice(values) for f in fields if rng.random() < 0.9}
        if rng.random() < 0.3:
            event["region"] = rng.sample(values, 2)  # an array: any element
        event["detail"] = {"n": rng.choice([0, 5])}
        assert m.match(event) == {k for k, p in compiled.items() if p.matches(event)}
    assert sum(1 for f in m._fields.values() if f.pairs) > 0  # the pairs were in use
