import time

import pytest

from flows.engine import GraphValidationError, NodeError, RunContext, parse_graph, registry, run_graph
from flows.engine.components.data import REGEX_TIMEOUT


def component(type_name, /, **values):
    return registry.get(type_name)(node_id="n", context=RunContext()).run(**values)


def issues(nodes, edges=()):
    with pytest.raises(GraphValidationError) as exc:
        parse_graph({"nodes": nodes, "edges": list(edges)})
    return [(i.loc, i.type) for i in exc.value.issues]


# --- Extract -----------------------------------------------------------------


def test_extract_queries_with_jmespath():
    data = {"customer": {"name": "Ada"}, "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 3}]}
    assert component("Extract", data=data, query="customer.name") == {"value": "Ada"}
    assert component("Extract", data=data, query="items[?qty > `1`].sku") == {"value": ["b"]}
    assert component("Extract", data=data, query="nothing.here") == {"value": None}


def test_extract_invalid_query_is_refused_at_save():
    found = issues(
        [{"id": "x", "type": "Extract", "params": {"query": "items[?"}}, {"id": "h", "type": "Webhook"}], [{"source": "h", "target": "x"}]
    )
    assert (("nodes", 0, "params", "query"), "jmespath") in found


@pytest.mark.parametrize("query", ["(" * 3000 + "a" + ")" * 3000, "[" * 3000 + "a" + "]" * 3000])
def test_a_query_nested_too_deeply_for_the_parser_is_refused_at_save(query):
    data = {
        "nodes": [{"id": "hook", "type": "Webhook"}, {"id": "x", "type": "Extract", "params": {"query": query}}],
        "edges": [{"source": "hook", "target": "x", "target_input": "data"}],
    }
    with pytest.raises(GraphValidationError, match="nested too deeply"):
        parse_graph(data)


def test_extract_failing_query_at_run_time_is_a_node_error():
    # A query that compiles but cannot apply to the data (a function on the wrong type).
    with pytest.raises(NodeError, match="failed"):
        component("Extract", data={"a": 1}, query="length(a)")


# --- Template ----------------------------------------------------------------


def test_template_takes_several_named_inputs_and_keeps_data():
    assert component("Template", template="{greeting}, {name} ({id})", data={"id": 7}, greeting="Hi", name="Ada") == {"text": "Hi, Ada (7)"}


def test_template_named_inputs_from_edges():
    graph = parse_graph(
        {
            "nodes": [
                {"id": "h", "type": "Webhook"},
                {"id": "who", "type": "Extract", "params": {"query": "customer"}},
                {"id": "t", "type": "Template", "params": {"template": "Dear {who}, order {order}", "order": "#1"}},
                {"id": "o", "type": "Output", "params": {"name": "text"}},
            ],
            "edges": [
                {"source": "h", "target": "who"},
                {"source": "who", "target": "t", "target_input": "who"},
                {"source": "t", "target": "o"},
            ],
        }
    )
    assert run_graph(graph, payload={"customer": "Ada"}).outputs == {"text": "Dear Ada, order #1"}


def test_template_malformed_is_refused_at_save_and_non_object_data_fails():
    found = issues([{"id": "t", "type": "Template", "params": {"template": "Hello {name"}}])
    assert (("nodes", 0, "params", "template"), "template") in found
    with pytest.raises(NodeError, match="needs an object"):
        component("Template", template="x", data=[1])


def test_template_extra_inputs_must_be_identifiers():
    found = issues([{"id": "t", "type": "Template", "params": {"template": "x", "not a name": 1}}])
    assert (("nodes", 0, "params", "not a name"), "extra_forbidden") in found


# --- Condition ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "operator", "value", "case_sensitive", "expected"),
    [
        ("paid", "equals", "paid", True, True),
        ("Paid", "equals", "paid", True, False),
        ("Paid", "equals", "paid", False, True),
        (42, "equals", "42", True, True),
        (42, "equals", 42, True, True),
        ("paid", "not_equals", "open", True, True),
        ("hello world", "contains", "WORLD", False, True),
        ("hello world", "contains", "WORLD", True, False),
        (["a", "b"], "contains", "b", True, True),
        ("hello", "starts_with", "he", True, True),
        ("hello", "ends_with", "LO", False, True),
        ("order-123", "matches", r"^order-\d+$", True, True),
        ("ORDER-1", "matches", r"^order-\d+$", False, True),
        ("ORDER-1", "matches", r"^order-\d+$", True, False),
        (10, "gt", 5, True, True),
        ("10", "gt", "9", True, True),
        (3, "lt", 5, True, True),
        (5, "ge", 5, True, True),
        (5, "le", 4, True, False),
        ("", "is_empty", None, True, True),
        ("  ", "is_empty", None, True, True),
        ([], "is_empty", None, True, True),
        (None, "is_empty", None, True, True),
        ({"a": 1}, "is_not_empty", None, True, True),
        (0, "is_empty", None, True, False),
    ],
)
def test_condition_operators(subject, operator, value, case_sensitive, expected):
    result = component("Condition", data=subject, operator=operator, value=value, case_sensitive=case_sensitive)
    assert result == ({"true": subject} if expected else {"false": subject})


def test_condition_path_selects_what_is_compared_and_passes_the_whole_input():
    data = {"status": "paid", "id": 1}
    assert component("Condition", data=data, path="status", operator="equals", value="paid") == {"true": data}


@pytest.mark.parametrize(
    "subject, operator, value, expected",
    [
        (10**400, "gt", 5, True),  # a JSON integer past a float's range: compared exactly, not an OverflowError
        (-(10**400), "lt", 1.5e308, True),
        (10**400 + 1, "gt", 10**400, True),
        (2**53 + 1, "gt", 2**53, True),  # equal as floats
        ("9" * 400, "gt", 5, True),
        (10**400, "le", "1e999", True),  # numeric text past a float's range is infinite
    ],
)
def test_condition_compares_numbers_of_any_size(subject, operator, value, expected):
    result = component("Condition", data=subject, operator=operator, value=value)
    assert result == ({"true": subject} if expected else {"false": subject})


def test_condition_numeric_comparison_of_text_fails_clearly():
    with pytest.raises(NodeError, match="compares numbers"):
        component("Condition", data="abc", operator="gt", value=1)


def test_condition_bad_params_are_refused_at_save():
    found = issues(
        [
            {"id": "c", "type": "Condition", "params": {"data": 1, "operator": "matches", "value": "("}},
            {"id": "d", "type": "Condition", "params": {"data": 1, "operator": "between"}},
            {"id": "e", "type": "Condition", "params": {"data": 1, "path": "a[", "value": 1}},
        ]
    )
    assert (("nodes", 0, "params", "value"), "regex") in found
    assert (("nodes", 1, "params", "operator"), "enum") in found
    assert (("nodes", 2, "params", "path"), "jmespath") in found


# --- JSONBuild, TextJoin, Text ---------------------------------------------------


def test_jsonbuild_builds_from_named_inputs_over_base():
    assert component("JSONBuild", base={"a": 1, "b": 2}, b=3, c="x") == {"data": {"a": 1, "b": 3, "c": "x"}}


def test_jsonbuild_base_must_be_an_object():
    assert (("nodes", 0, "params", "base"), "object_type") in issues([{"id": "j", "type": "JSONBuild", "params": {"base": [1]}}])


def test_textjoin_joins_in_edge_order_and_writes_json_for_non_text():
    graph = parse_graph(
        {
            "nodes": [
                {"id": "a", "type": "Text", "params": {"text": "first"}},
                {"id": "b", "type": "Text", "params": {"text": "second"}},
                {"id": "h", "type": "Webhook"},
                {"id": "j", "type": "TextJoin", "params": {"separator": " | "}},
                {"id": "o", "type": "Output", "params": {"name": "joined"}},
            ],
            "edges": [
                {"source": "b", "target": "j", "target_input": "texts"},
                {"source": "h", "target": "j", "target_input": "texts"},
                {"source": "a", "target": "j", "target_input": "texts"},
                {"source": "j", "target": "o"},
            ],
        }
    )
    assert run_graph(graph, payload={"n": 1}).outputs == {"joined": 'second | {"n": 1} | first'}


def test_textjoin_param_must_be_a_list_and_single_inputs_still_take_one_edge():
    assert (("nodes", 0, "params", "texts"), "list_type") in issues([{"id": "j", "type": "TextJoin", "params": {"texts": "a"}}])
    with pytest.raises(NodeError):
        component("TextJoin", texts="nope")


def test_text_gives_its_text():
    assert component("Text", text="hi") == {"text": "hi"}


# --- Regular expressions under a time limit --------------------------------------------

HOSTILE = r"(a|aa)+$"  # backtracks exponentially on a run of a's that does not end the text
VICTIM = "a" * 40 + "!"


def test_condition_matches_the_catastrophic_pattern_of_the_report_quickly():
    started = time.monotonic()
    assert component("Condition", data=VICTIM, operator="matches", value=r"(a+)+$") == {"false": VICTIM}
    assert time.monotonic() - started < 1


def test_condition_matches_fails_at_the_runs_remaining_time():
    context = RunContext(deadline=time.monotonic() + 0.3)
    started = time.monotonic()
    with pytest.raises(NodeError, match="regular expression .* took longer than"):
        registry.get("Condition")(node_id="c", context=context).run(data=VICTIM, operator="matches", value=HOSTILE)
    # Not at once (a fixed short cap would), and not past the run's time. The regex package's timeout counts the
    # process's CPU time, which the process's other threads advance too, so it may end a little before the deadline.
    assert 0.15 < time.monotonic() - started < 1.5


def test_condition_matches_is_capped_without_a_run_deadline():
    started = time.monotonic()
    with pytest.raises(NodeError, match="took longer than"):
        component("Condition", data=VICTIM, operator="matches", value=HOSTILE, case_sensitive=False)
    assert time.monotonic() - started < REGEX_TIMEOUT + 1


def test_a_hostile_condition_fails_its_run_at_the_run_time_limit():
    graph = parse_graph(
        {
            "nodes": [
                {"id": "in", "type": "Webhook"},
                {"id": "c", "type": "Condition", "params": {"operator": "matches", "value": HOSTILE}},
                {"id": "yes", "type": "Output", "params": {"name": "yes"}},
            ],
            "edges": [{"source": "in", "target": "c"}, {"source": "c", "source_output": "true", "target": "yes"}],
        }
    )
    started = time.monotonic()
    result = run_graph(graph, payload=VICTIM, timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert result.status == "failed" and "regular expression" in result.error
    # The match's own limit is the run's remaining time: on a busy machine either ends it first, both at the limit.
    if result.timed_out:
        assert "exceeded its time limit of 0.5 s in node 'c' (Condition)" in result.error
    else:
        assert "took longer than" in result.error and [n.status for n in result.nodes if n.node_id == "c"] == ["failed"]


# --- Output amplification -----------------------------------------------------------


def extract(data, query, limit=100_000):
    return registry.get("Extract")(node_id="x", context=RunContext(max_output_bytes=limit)).run(data=data, query=query)


@pytest.mark.parametrize(
    "query",
    [
        "s" + " | [@,@]" * 40,  # a result of 2^40 shared references
        "s" + " | [@,@] | []" * 30,  # real lists that double per step
        "s" + " | {a: @, b: @}" * 40,
        "s" + " | [@,@]" * 30 + " | to_string(@)",
        "[s, s, s, s]" + " | [*].[@, @, @, @]" * 12,
        # 10,000 empty texts joined by a 90,000-character separator: each within the limit, their join is not.
        "join(sep, e" + " | [@,@,@,@,@,@,@,@,@,@] | []" * 4 + ")",
    ],
)
def test_extract_stops_a_result_that_outgrows_the_output_limit(query):
    started = time.monotonic()
    with pytest.raises(NodeError, match="larger than the limit of 100000 bytes"):
        extract({"s": "0123456789", "e": "", "sep": "x" * 90_000}, query)
    assert time.monotonic() - started < 2


def test_extract_results_within_the_limit_are_unchanged():
    assert extract({"s": "ab"}, "s | [@,@] | [@,@]") == {"value": [["ab", "ab"], ["ab", "ab"]]}
    assert extract({"items": list(range(1000))}, "items[?@ > `997`]") == {"value": [998, 999]}
