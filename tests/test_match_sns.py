"""SNS filter policies (walq.match): every operator, both scopes, SNS's limits
and validation texts, and the index (Matcher) agreeing with one-by-one
evaluation over random policies and messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import walq
from walq.match import Matcher, compile_filter_policy

PREFIX = "Invalid parameter: FilterPolicy: "


def matches(policy, attributes, scope="attributes"):
    return compile_filter_policy(policy, scope=scope).matches(attributes)


def refused(policy, scope="attributes"):
    with pytest.raises(walq.InvalidPattern) as info:
        compile_filter_policy(policy, scope=scope)
    return str(info.value)


# --- operators, attribute scope ---------------------------------------------

def test_exact_strings_or_within_a_list_and_across_keys():
    policy = {"color": ["red", "blue"], "size": ["L"]}
    assert matches(policy, {"color": "blue", "size": "L"})
    assert not matches(policy, {"color": "blue", "size": "M"})
    assert not matches(policy, {"color": "green", "size": "L"})
    assert not matches(policy, {"color": "blue"})
    assert not matches({"color": ["red"]}, {"color": "Red"})  # case-sensitive


def test_empty_policy_matches_everything():
    assert matches({}, {})
    assert matches("{}", {"a": "b"})
    assert compile_filter_policy({}, scope="body").matches("not json")


def test_policy_as_json_text():
    assert matches('{"color": ["red"]}', {"color": "red"})


def test_prefix():
    assert matches({"c": [{"prefix": "bl"}]}, {"c": "blue"})
    assert not matches({"c": [{"prefix": "bl"}]}, {"c": "able"})


def test_suffix():
    assert matches({"c": [{"suffix": "ue"}]}, {"c": "blue"})
    assert not matches({"c": [{"suffix": "ue"}]}, {"c": "ueb"})


def test_equals_ignore_case():
    assert matches({"c": [{"equals-ignore-case": "ReD"}]}, {"c": "rEd"})
    assert not matches({"c": [{"equals-ignore-case": "red"}]}, {"c": "reds"})


def test_anything_but_values_and_single_value():
    policy = {"c": [{"anything-but": ["red", "blue"]}]}
    assert matches(policy, {"c": "green"})
    assert not matches(policy, {"c": "red"})
    assert not matches(policy, {})  # an absent attribute is not "anything but"
    assert matches({"c": [{"anything-but": "red"}]}, {"c": "blue"})
    assert not matches({"c": [{"anything-but": "red"}]}, {"c": "red"})


def test_anything_but_numbers_on_number_attributes():
    policy = {"price": [{"anything-but": [100, 500]}]}
    assert matches(policy, {"price": 101})
    assert matches(policy, {"price": 100.1})
    assert not matches(policy, {"price": 100})
    assert not matches(policy, {"price": ("Number", "5e2")})


def test_anything_but_prefix_and_suffix():
    assert matches({"c": [{"anything-but": {"prefix": "bl"}}]}, {"c": "red"})
    assert not matches({"c": [{"anything-but": {"prefix": "bl"}}]}, {"c": "blue"})
    assert matches({"c": [{"anything-but": {"suffix": "ue"}}]}, {"c": "red"})
    assert not matches({"c": [{"anything-but": {"suffix": "ue"}}]}, {"c": "blue"})


def test_numeric_comparisons_and_ranges():
    assert matches({"p": [{"numeric": ["=", 301.5]}]}, {"p": ("Number", "3.015e2")})
    assert matches({"p": [{"numeric": [">", 0]}]}, {"p": 1})
    assert not matches({"p": [{"numeric": [">", 0]}]}, {"p": 0})
    assert matches({"p": [{"numeric": [">=", 0]}]}, {"p": 0})
    assert matches({"p": [{"numeric": ["<", 0]}]}, {"p": -0.5})
    assert matches({"p": [{"numeric": ["<=", 0]}]}, {"p": 0})
    rng = {"p": [{"numeric": [">", 0, "<=", 150]}]}
    assert matches(rng, {"p": 150}) and matches(rng, {"p": 0.001})
    assert not matches(rng, {"p": 0}) and not matches(rng, {"p": 150.0001})


def test_numeric_matches_number_attributes_only_not_numeric_looking_strings():
    policy = {"p": [{"numeric": [">", 10]}]}
    assert matches(policy, {"p": 11})
    assert matches(policy, {"p": ("Number", "11")})
    assert not matches(policy, {"p": "11"})
    assert not matches(policy, {"p": ("String", "11")})


def test_number_attribute_matches_no_string_operator():
    assert not matches({"p": ["100"]}, {"p": 100})
    assert not matches({"p": [{"prefix": "1"}]}, {"p": 100})
    assert matches({"p": [100]}, {"p": ("Number", "1e2")})  # a literal number is numeric equality


def test_cidr_ipv4_and_ipv6():
    assert matches({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.0.255"})
    assert not matches({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "10.0.1.0"})
    assert not matches({"ip": [{"cidr": "10.0.0.0/24"}]}, {"ip": "not an ip"})
    assert matches({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8::1"})
    assert not matches({"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db9::1"})


def test_exists_true_and_false():
    assert matches({"a": [{"exists": True}]}, {"a": "x"})
    assert not matches({"a": [{"exists": True}]}, {"b": "x"})
    assert matches({"a": [{"exists": False}]}, {"b": "x"})
    assert not matches({"a": [{"exists": False}]}, {"a": "x"})
    # SNS compares String, String.Array and Number attributes only: Binary counts as absent.
    assert matches({"a": [{"exists": False}]}, {"a": b"\x00"})


def test_or_across_keys():
    policy = {"source": ["aws.cloudwatch"], "$or": [{"metric": ["CPU"]}, {"ns": ["AWS/EC2"]}]}
    assert matches(policy, {"source": "aws.cloudwatch", "metric": "CPU"})
    assert matches(policy, {"source": "aws.cloudwatch", "ns": "AWS/EC2"})
    assert not matches(policy, {"source": "aws.cloudwatch", "metric": "Mem"})
    assert not matches(policy, {"source": "other", "metric": "CPU"})


def test_string_array_matches_if_any_element_matches():
    policy = {"interests": ["rugby"]}
    assert matches(policy, {"interests": ("String.Array", '["soccer", "rugby"]')})
    assert matches(policy, {"interests": ["soccer", "rugby"]})
    assert not matches(policy, {"interests": ("String.Array", '["soccer"]')})
    assert matches({"n": [{"numeric": [">", 5]}]}, {"n": ("String.Array", "[1, 10]")})
    assert matches({"n": [{"anything-but": "a"}]}, {"n": ["a", "b"]})


def test_attribute_representations():
    policy = {"a": ["x"], "n": [{"numeric": ["=", 2]}]}
    assert matches(policy, {"a": "x", "n": 2})
    assert matches(policy, {"a": ("String", "x"), "n": ("Number", "2")})
    assert matches(policy, {"a": {"Type": "String", "Value": "x"}, "n": {"Type": "Number", "Value": "2.0"}})
    assert matches(policy, {"a": {"DataType": "String", "StringValue": "x"},
                            "n": {"DataType": "Number.int", "StringValue": "2"}})
    with pytest.raises(walq.InvalidParameter):
        matches(policy, {"a": object()})


def test_queue_message_attributes_match_without_conversion(tmp_path):
    with walq.open(str(tmp_path / "d")) as broker:
        q = broker.create_queue("q")
        q.send("hi", attributes={"kind": "order", "total": 12.5, "blob": b"\x01"})
        [msg] = q.receive(1)
    policy = compile_filter_policy({"kind": ["order"], "total": [{"numeric": [">", 10]}]})
    assert policy.matches(msg.attributes)


# --- body scope -------------------------------------------------------------

def test_body_scope_nested_keys_and_numbers():
    policy = {"order": {"kind": ["book"], "total": [12.5, 99]}}
    assert matches(policy, json.dumps({"order": {"kind": "book", "total": 99}}), "body")
    assert matches(policy, {"order": {"kind": "book", "total": 12.5}}, "body")
    assert not matches(policy, {"order": {"kind": "book", "total": "99"}}, "body")
    assert not matches(policy, {"kind": "book", "total": 99}, "body")


def test_body_scope_non_json_matches_nothing():
    policy = {"a": [{"exists": False}]}
    assert not matches(policy, "plain text", "body")
    assert not matches(policy, "[1, 2]", "body")
    assert matches(policy, "{}", "body")


def test_body_scope_arrays_of_objects():
    policy = {"Records": {"eventName": [{"prefix": "ObjectCreated:"}]}}
    body = {"Records": [{"eventName": "ObjectRemoved:Delete"}, {"eventName": "ObjectCreated:Put"}]}
    assert matches(policy, body, "body")
    body["Records"].pop()
    assert not matches(policy, body, "body")


def test_body_scope_fields_of_one_array_element_match_together():
    policy = {"Records": {"eventName": ["Put"], "size": [{"numeric": [">", 10]}]}}
    body = {"Records": [{"eventName": "Put", "size": 5}, {"eventName": "Delete", "size": 50}]}
    assert not matches(policy, body, "body")
    body["Records"][0]["size"] = 11
    assert matches(policy, body, "body")


def test_body_scope_booleans_and_null():
    assert matches({"ok": [True]}, {"ok": True}, "body")
    assert not matches({"ok": [True]}, {"ok": 1}, "body")
    assert matches({"v": [None]}, {"v": None}, "body")
    assert not matches({"v": [None]}, {}, "body")


# --- validation and limits --------------------------------------------------

def test_at_most_five_keys():
    policy = {f"k{i}": ["v"] for i in range(5)}
    compile_filter_policy(policy)
    policy["k5"] = ["v"]
    assert refused(policy) == PREFIX + "Filter policy can not have more than 5 keys"


def test_body_scope_counts_parent_keys_only():
    compile_filter_policy({"a": {f"k{i}": ["1"] for i in range(6)}}, scope="body")
    policy = {f"p{i}": {"k": ["1"]} for i in range(6)}
    assert refused(policy, "body") == PREFIX + "Filter policy can not have more than 5 keys"


def test_keys_counted_per_or_branch():
    compile_filter_policy({"$or": [{"a": ["1"], "b": ["1"]}, {"c": ["1"]}], "d": ["1"], "e": ["1"], "f": ["1"]})
    text = refused({"$or": [{"a": ["1"], "b": ["1"], "c": ["1"]}, {"x": ["1"]}], "d": ["1"], "e": ["1"], "f": ["1"]})
    assert text == PREFIX + "Filter policy can not have more than 5 keys"


def test_at_most_150_combinations():
    compile_filter_policy({"a": [str(i) for i in range(15)], "b": [str(i) for i in range(10)]})
    text = refused({"a": [str(i) for i in range(16)], "b": [str(i) for i in range(10)]})
    assert text == PREFIX + "Filter policy is too complex"


def test_combinations_add_up_over_or_branches():
    branch = {"a": [str(i) for i in range(10)], "b": [str(i) for i in range(7)]}  # 70 each
    compile_filter_policy({"$or": [branch, branch]})  # 140
    assert refused({"$or": [branch, branch, {"c": [str(i) for i in range(11)]}]}) \
        == PREFIX + "Filter policy is too complex"  # 151


def test_combinations_weigh_nested_arrays_by_depth():
    # SNS's own example counts 4 values at depth 3 and 3 at depth 2 as 3*4*2*3 = 72.
    policy = {"a": {"b": {"c": ["1", "2", "3", "4"]}}, "d": {"e": ["1", "2", "3"]}}
    compile_filter_policy(policy, scope="body")
    policy["d"]["e"] += ["4", "5", "6", "7"]  # 12 * 7 * 2 = 168
    assert refused(policy, "body") == PREFIX + "Filter policy is too complex"


def test_numbers_bounded_by_one_billion():
    compile_filter_policy({"p": [{"numeric": ["<", 1_000_000_000]}]})
    assert "out of range" in refused({"p": [{"numeric": ["<", 1_000_000_001]}]})
    assert "out of range" in refused({"p": [-1e10]})


def test_attribute_scope_refuses_nesting():
    assert refused({"a": {"b": ["c"]}}) == \
        "Invalid parameter: Filter policy scope MessageAttributes does not support nested filter policy"


def test_values_must_be_arrays_or_objects():
    assert refused({"a": "red"}) == PREFIX + '"a" must be an object or an array'


def test_empty_arrays_refused():
    assert refused({"a": []}) == PREFIX + "Empty arrays are not allowed"


def test_match_values_must_be_scalars():
    assert refused({"a": [["x"]]}) == PREFIX + "Match value must be String, number, true, false, or null"


def test_one_key_per_match_expression():
    assert refused({"a": [{"prefix": "x", "suffix": "y"}]}) == PREFIX + "Only one key allowed in match expression"


def test_unknown_operator_and_wildcard_refused():
    assert refused({"a": [{"regex": "x"}]}) == PREFIX + "Unrecognized match type regex"
    assert refused({"a": [{"wildcard": "x*"}]}) == PREFIX + "Unrecognized match type wildcard"


def test_string_operators_need_strings():
    assert refused({"a": [{"prefix": 1}]}) == PREFIX + "prefix match pattern must be a string"
    assert refused({"a": [{"suffix": None}]}) == PREFIX + "suffix match pattern must be a string"
    assert refused({"a": [{"prefix": {"equals-ignore-case": "x"}}]}) == PREFIX + "prefix match pattern must be a string"
    assert refused({"a": [{"equals-ignore-case": 3}]}) == PREFIX + "equals-ignore-case match pattern must be a string"


def test_exists_needs_a_boolean():
    assert refused({"a": [{"exists": "true"}]}) == PREFIX + "exists match pattern must be either true or false."


def test_anything_but_validation():
    assert refused({"a": [{"anything-but": {"wildcard": "x"}}]}) == PREFIX + "Unsupported anything-but pattern: wildcard"
    assert refused({"a": [{"anything-but": {"prefix": 5}}]}) == PREFIX + "prefix/suffix match pattern must be a string"
    assert refused({"a": [{"anything-but": {"prefix": ""}}]}) == PREFIX + "Null prefix/suffix not allowed"
    assert refused({"a": [{"anything-but": [None]}]}) == \
        PREFIX + "Inside anything but list, start|null|boolean is not supported."
    assert refused({"a": [{"anything-but": True}]}) == \
        PREFIX + "Value of anything-but must be an array or single string/number value."


@pytest.mark.parametrize("numeric, reason", [
    ([], "Invalid member in numeric match: ]"),
    ([5], "Invalid member in numeric match: 5"),
    (["!=", 5], "Unrecognized numeric range operator: !="),
    (["<", "5"], "Value of < must be numeric"),
    (["="], "Value of equals must be numeric"),
    (["<", 5, ">", 1], "Too many elements in numeric expression"),
    ([">", 1, 5, 6], 'Bad value in numeric range: 5'),
    ([">", 1, ">", 6], "Bad numeric range operator: >"),
    ([">", 1, "<", "x"], "Value of < must be numeric"),
    ([">", 5, "<", 5], "Bottom must be less than top"),
    ([">", 1, "<", 5, "<", 6], "Too many terms in numeric range expression"),
])
def test_numeric_validation(numeric, reason):
    assert refused({"p": [{"numeric": numeric}]}) == PREFIX + reason


@pytest.mark.parametrize("cidr, reason", [
    (5, "prefix match pattern must be a string"),
    ("10.0.0.0", "Malformed CIDR, one '/' required"),
    ("10.0.0.0/x", "Malformed CIDR, mask bits must be an integer"),
    ("10.0.0.300/24", "Nonstandard IP address: 10.0.0.300"),
])
def test_cidr_validation(cidr, reason):
    assert refused({"ip": [{"cidr": cidr}]}) == PREFIX + reason


def test_bad_json_and_non_object_refused():
    assert refused("{not json").startswith(PREFIX + "Filter is not valid JSON")
    assert refused("[1]") == PREFIX + "Filter is not an object"


def test_invalid_pattern_is_an_invalid_parameter_and_value_error():
    with pytest.raises(walq.InvalidParameter):
        compile_filter_policy({"a": "b"})
    with pytest.raises(ValueError):
        compile_filter_policy({"a": "b"})
    with pytest.raises(walq.InvalidParameter):
        compile_filter_policy({}, scope="payload")


# --- Matcher ----------------------------------------------------------------

def test_matcher_add_remove_replace():
    m = Matcher("attributes")
    m.add("a", {"color": ["red"]})
    m.add("b", {"color": [{"prefix": "r"}]})
    m.add("c", {"size": [{"exists": False}]})
    assert m.match({"color": "red"}) == {"a", "b", "c"}
    m.remove("b")
    assert m.match({"color": "red", "size": "L"}) == {"a"}
    m.add("a", {"color": ["blue"]})  # replaces
    assert m.match({"color": "red", "size": "L"}) == set()
    assert len(m) == 2 and "a" in m and "b" not in m
    with pytest.raises(KeyError):
        m.remove("b")


def test_matcher_refuses_an_invalid_policy_without_changing():
    m = Matcher()
    m.add("a", {"color": ["red"]})
    with pytest.raises(walq.InvalidPattern):
        m.add("a", {"color": "red"})
    assert m.match({"color": "red"}) == {"a"}


def test_matcher_body_scope_non_json():
    m = Matcher("body")
    m.add("all", {})
    m.add("some", {"a": ["b"]})
    assert m.match("not json") == {"all"}
    assert m.match('{"a": "b"}') == {"all", "some"}


def test_matcher_refuses_a_policy_of_another_scope():
    with pytest.raises(walq.InvalidParameter):
        Matcher("attributes").add("x", compile_filter_policy({}, scope="body"))


# --- equivalence: the index answers exactly as one-by-one evaluation --------

_NAMES = ["a", "b", "c"]
_WORDS = ["", "red", "Red", "reed", "blue", "10.0.0.7", "2001:db8::1", "bl", "ue"]
_NUMS = [-5, 0, 1, 2.5, 10, 100]

_value = st.one_of(st.sampled_from(_WORDS), st.sampled_from(_NUMS))
_condition = st.one_of(
    _value,
    st.builds(lambda w: {"prefix": w}, st.sampled_from(_WORDS)),
    st.builds(lambda w: {"suffix": w}, st.sampled_from(_WORDS)),
    st.builds(lambda w: {"equals-ignore-case": w}, st.sampled_from(_WORDS)),
    st.builds(lambda v: {"anything-but": v}, st.one_of(_value, st.lists(_value, min_size=1, max_size=3))),
    st.builds(lambda w: {"anything-but": {"prefix": w}}, st.sampled_from(_WORDS[1:])),
    st.builds(lambda w: {"anything-but": {"suffix": w}}, st.sampled_from(_WORDS[1:])),
    st.builds(lambda op, v: {"numeric": [op, v]}, st.sampled_from(["<", "<=", "=", ">", ">="]), st.sampled_from(_NUMS)),
    st.builds(lambda lo, w, lop, hop: {"numeric": [lop, lo, hop, lo + w]}, st.sampled_from(_NUMS),
              st.sampled_from([0.5, 3, 50]), st.sampled_from([">", ">="]), st.sampled_from(["<", "<="])),
    st.builds(lambda b: {"exists": b}, st.booleans()),
    st.sampled_from([{"cidr": "10.0.0.0/8"}, {"cidr": "2001:db8::/32"}]),
)
_fields = st.dictionaries(st.sampled_from(_NAMES), st.lists(_condition, min_size=1, max_size=3), max_size=3)
_policy = st.one_of(_fields, st.builds(lambda base, alts: {**base, "$or": alts}, _fields,
                                       st.lists(_fields.filter(bool), min_size=1, max_size=3)))
_attribute = st.one_of(st.sampled_from(_WORDS[1:]), st.sampled_from(_NUMS),
                       st.lists(_value, min_size=1, max_size=3))
_message = st.dictionaries(st.sampled_from(_NAMES), _attribute, max_size=3)


def _compiled_or_none(policy):
    try:
        return compile_filter_policy(policy)
    except walq.InvalidPattern:
        return None


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_policy, min_size=1, max_size=12), st.lists(_message, min_size=1, max_size=8))
def test_matcher_equals_one_by_one_evaluation(policies, messages):
    compiled = {i: p for i, p in enumerate(map(_compiled_or_none, policies)) if p is not None}
    m = Matcher("attributes")
    for key, policy in compiled.items():
        m.add(key, policy)
    for message in messages:
        assert m.match(message) == {k for k, p in compiled.items() if p.matches(message)}
    for key in list(compiled)[::2]:
        m.remove(key)
        del compiled[key]
    for message in messages:
        assert m.match(message) == {k for k, p in compiled.items() if p.matches(message)}
