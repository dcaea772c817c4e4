"""serve_request.parse on request bodies alone (no model): the integer, float and bool fields read as pydantic's lax
mode reads them (vLLM's and trtllm-serve's request models), and each route's max_tokens refusal saying what that route
takes."""

from __future__ import annotations

import pytest

from redrafter_trt.serve_errors import RequestError
from redrafter_trt.serve_request import parse

ASK = [{"role": "user", "content": "Hi"}]


def completion(**fields):
    return parse({"prompt": "Hi"} | fields, chat=False, model_name="m", max_output_len=16)


def chat(**fields):
    return parse({"messages": ASK} | fields, chat=True, model_name="m", max_output_len=16)


@pytest.mark.parametrize("sent, read", [(3.0, 3), (1e1, 10), (-0.0, 0), ("3", 3), (" 4\n", 4), ("\xa04\u3000", 4),
                                        ("\u20004", 4), ("\u200a4", 4), ("+5", 5), ("1_2", 12), ("7.00", 7),
                                        (True, 1), (False, 0)])
def test_integer_fields_take_what_pydantics_lax_mode_takes(sent, read):
    """`"max_tokens": 3.0` was a 400 here, where vLLM and trtllm-serve (pydantic models, lax mode) read 3; and
    completions' `"logprobs": true`, which they read as 1 (vLLM's before-validator only refuses a value below 0)."""
    fields = {"max_tokens": sent, "n": sent, "seed": sent}
    if read >= 1:
        req = completion(**fields)
        assert (req.max_tokens, req.n, req.seed) == (read, read, read)
        assert chat(max_completion_tokens=sent, logprobs=True, top_logprobs=sent).logprobs == read
    assert completion(logprobs=sent).logprobs == read
    assert completion(echo=True, max_tokens=sent).max_tokens == read


@pytest.mark.parametrize("sent", [3.5, 1e-9, "3.5", "3.", "1e2", "0x10", "", "three", "１", [3], {"n": 3},
                                  float("inf"), float("nan"), "\x1c3", "3\x1f"])
def test_what_is_no_integer_is_refused_as_before(sent):
    """\x1c-\x1f are whitespace to Python's str.strip, not to pydantic (Unicode's White_Space, Rust's trim)."""
    for field in ("max_tokens", "n", "seed", "logprobs"):
        with pytest.raises(RequestError, match=f'"{field}" must be') as e:
            completion(**{field: sent})
        assert e.value.param == field


def test_each_routes_max_tokens_refusal_says_what_that_route_takes():
    """The chat route's said '0 only with "echo": true', which chat's echo does not allow."""
    with pytest.raises(RequestError) as e:
        chat(max_tokens=0, echo=True)
    assert str(e.value) == '"max_tokens" must be an integer in 1..16 (the server\'s --max-output-len)'
    with pytest.raises(RequestError, match=r'in 1\.\.16 \(the server\'s --max-output-len; 0 only with "echo": true\)'):
        completion(max_tokens=0)
    with pytest.raises(RequestError, match=r'"max_tokens" must be an integer in 0\.\.16 \(the server\'s '
                                           r'--max-output-len\)$'):
        completion(max_tokens=17, echo=True)


def test_a_refused_tool_choice_names_both_values_taken():
    """It said `leave it out (or send "none")`, where "auto" is taken too."""
    from redrafter_trt.serve_request import refuse_unsupported

    for choice in ("required", {"type": "function", "function": {"name": "f"}}):
        with pytest.raises(RequestError, match=r'"tool_choice" .*: leave it out \(or send "none" or "auto"\)$'):
            refuse_unsupported({"messages": ASK, "tool_choice": choice}, True, sampling=False, tools=True)


@pytest.mark.parametrize("field, sent", [("top_k", "-1"), ("top_k", "0"), ("top_k", -1.0), ("min_tokens", "0"),
                                         ("min_tokens", False), ("min_tokens", 0.0)])
def test_a_field_that_changes_nothing_is_read_as_parse_reads_integers(field, sent):
    """`"top_k": "-1"` passed parse (lax integers, as pydantic) and was then refused on a sampling checkpoint as
    changing the answer (a review): the value that changes nothing is read as `parse` reads integers."""
    from redrafter_trt.serve_request import refuse_unsupported

    body = {"prompt": "Hi", field: sent}
    parse(body, chat=False, model_name="m", max_output_len=16)
    refuse_unsupported(body, False, sampling=True)


@pytest.mark.parametrize("field, sent", [("top_k", "5"), ("top_k", True), ("min_tokens", "2"), ("min_tokens", 1.0)])
def test_a_field_that_changes_the_answer_is_refused_in_any_form(field, sent):
    from redrafter_trt.serve_request import refuse_unsupported

    with pytest.raises(RequestError, match=f'"{field}" is not implemented by this server'):
        refuse_unsupported({"prompt": "Hi", field: sent}, False, sampling=True)


FLOAT_TEXTS = ["0", "0.5", " 1 ", "\t.5\n", "5.", "+1", "-0", "1e0", "5E-1", "1.e0", "0_0.5", "1_0.5", "1._5",
               "\u00a01\u3000", "\u20001", "\u200a1", " \u2005 1", "\x0b1", "1__0", "_1", "1_", " 1_0 ", "\x1c1",
               "\u180e1", "\u200b1", "\ufeff1", "١", "１", "", " ",
               "abc", "0x10", "1 000", "1e", "e3", ".", "--1", "nan", "-NaN", "inf", "+Infinity",
               "infin", "i_nf", "1e400", "1" * 400, "0" * 5000 + ".5"]


@pytest.mark.parametrize("sent, read", [("0.5", 0.5), (" 1 ", 1.0), ("\t.5\n", 0.5), ("5.", 5.0), ("+1", 1.0),
                                        ("1e0", 1.0), ("5E-1", 0.5), ("0_0.5", 0.5), ("\u00a01\u3000", 1.0),
                                        ("\u20001", 1.0), ("\u200a1", 1.0), (" \u2005 1", 1.0), (True, 1.0),
                                        (False, 0.0), (1, 1.0), (0.25, 0.25)])
def test_float_fields_take_what_pydantics_lax_mode_takes(sent, read):
    """`"temperature": "0.5"` was a 400 here, where vLLM and trtllm-serve (pydantic models, lax mode) read 0.5, as
    they read integers (`serve_lax`): text as Rust's f64 parse reads it, trimmed, single underscores taken out."""
    assert completion(temperature=sent).temperature == read
    if 0 < read <= 1:
        completion(top_p=sent, min_p=sent)


@pytest.mark.parametrize("sent", ["", " ", "abc", "0x10", "1 000", "1e", ".", "1__0", "_1", " 1_0 ", "\x1c1",
                                  "\u200b1", "١", "１", "nan", "-NaN", "inf", "+Infinity", "1e400", 10 ** 400, [0.5],
                                  {"t": 1}, float("nan"), float("inf"), -1.0, "-0.5"])
def test_what_is_no_float_or_no_finite_one_is_refused(sent):
    """NaN and the infinities are read, as pydantic reads them, and refused by the fields' checks as before."""
    for field in ("temperature", "top_p", "min_p"):
        with pytest.raises(RequestError, match=f'^"{field}" must be a') as e:
            completion(**{field: sent})
        assert e.value.param == field


@pytest.mark.parametrize("sent", FLOAT_TEXTS, ids=lambda s: ascii(s)[:16])
def test_floats_are_read_as_pydantic_reads_them(sent):
    """The reading against pydantic 2's own (not a dependency: only where installed)."""
    import math

    from redrafter_trt.serve_lax import lax_float

    pydantic = pytest.importorskip("pydantic")
    try:
        want = pydantic.TypeAdapter(float).validate_python(sent)
    except pydantic.ValidationError:
        want = None
    got = lax_float(sent)
    assert got == want or (got is not None and want is not None and math.isnan(got) and math.isnan(want))


def test_a_long_number_that_is_none_is_read_at_once():
    """LAX_FLOAT's `[0-9]+\\.?[0-9]*` tried every split of a run of digits between its two parts before refusing
    what followed: "1" * 40000 + "x" took 101 s (quadratic) holding the GIL, every other request of the server waiting
    (a review; bodies up to 8 MiB are read). Run in a process of its own: a regex holding the GIL keeps a thread's
    join from timing out."""
    import subprocess
    import sys

    texts = '[d + "x", d + "_x", "." + d + "x", d + "e" + d + "x", d + ".0" + "0" * 10 ** 5 + "x"]'
    code = (f"from redrafter_trt.serve_lax import lax_float, lax_integer; d = '1' * 10 ** 5; "
            f"print([(lax_float(t), lax_integer(t)) for t in {texts}])")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=10, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail("reading 100000 digits and a letter took over 10 s")
    assert out.stdout.strip() == str([(None, None)] * 5)


@pytest.mark.parametrize("field, sent", [("presence_penalty", "0"), ("presence_penalty", " -0.0 "),
                                         ("frequency_penalty", False), ("frequency_penalty", "0e5"),
                                         ("repetition_penalty", "1"), ("repetition_penalty", True),
                                         ("length_penalty", "1_0e-1"), ("top_p", "1"), ("top_p", True),
                                         ("min_p", "0"), ("min_p", False)])
def test_a_field_that_changes_nothing_is_read_as_parse_reads_floats(field, sent):
    """`"presence_penalty": "0"` was refused as changing the answer, where vLLM and trtllm-serve read 0.0."""
    from redrafter_trt.serve_request import refuse_unsupported

    body = {"prompt": "Hi", field: sent}
    parse(body, chat=False, model_name="m", max_output_len=16)
    refuse_unsupported(body, False, sampling=True)


@pytest.mark.parametrize("field, sent", [("presence_penalty", "nan"), ("presence_penalty", float("nan")),
                                         ("frequency_penalty", "0.1"), ("repetition_penalty", "inf"),
                                         ("repetition_penalty", False), ("length_penalty", "1_0"), ("top_p", "0.9")])
def test_a_float_field_that_changes_the_answer_is_refused_in_any_form(field, sent):
    from redrafter_trt.serve_request import refuse_unsupported

    with pytest.raises(RequestError, match=f'"{field}" is not implemented by this server'):
        refuse_unsupported({"prompt": "Hi", field: sent}, False, sampling=True)


@pytest.mark.parametrize("field, sent, need", [
    ("presence_penalty", "abc", "a number"), ("frequency_penalty", [0], "a number"), ("length_penalty", "1__0", "a number"),
    ("min_p", "0x0", "a number"), ("min_tokens", "x", "an integer"), ("min_tokens", 0.5, "an integer"),
    ("skip_special_tokens", " t", "true or false"), ("use_beam_search", 2, "true or false")])
def test_a_field_it_does_not_implement_sent_as_no_value_of_its_kind_is_named_malformed(field, sent, need):
    """`"presence_penalty": "abc"` was refused as changing the answer, as a number other than 0 is; it is no number,
    and is refused as parse refuses a malformed field, saying what the field takes here."""
    from redrafter_trt.serve_request import refuse_unsupported

    with pytest.raises(RequestError, match=f'^"{field}" must be {need}, and any but ') as e:
        refuse_unsupported({"prompt": "Hi", field: sent}, False, sampling=True)
    assert e.value.param == field and "leave it out (or send " in str(e.value)


TRUE, FALSE = ["true", "True", "TRUE", "tRuE", "t", "T", "yes", "Y", "on", "ON", "1", 1, 1.0], [
    "false", "False", "f", "F", "no", "n", "N", "off", "Off", "0", 0, 0.0, -0.0]


@pytest.mark.parametrize("sent, read", [(s, True) for s in TRUE] + [(s, False) for s in FALSE],
                         ids=lambda s: ascii(s)[:16])
def test_bool_fields_take_what_pydantics_lax_mode_takes(sent, read):
    """`"stream": "true"` and `"echo": 1` were 400s here, where vLLM and trtllm-serve (pydantic models, lax mode)
    read true, as they read integers and floats (`serve_lax`)."""
    req = completion(stream=sent, echo=sent, ignore_eos=sent)
    assert (req.stream, req.echo, req.ignore_eos) == (read, read, read)
    req = completion(stream=True, stream_options={"include_usage": sent, "continuous_usage_stats": True})
    assert (req.include_usage, req.continuous_usage) == (read, read)
    assert completion(stream=True, stream_options={"include_usage": True, "continuous_usage_stats": sent}
                      ).continuous_usage == read
    assert chat(logprobs=sent).logprobs == (0 if read else None)


def test_a_null_stream_option_is_unset():
    """`"stream_options": {"include_usage": null}` was refused, where vLLM's and trtllm-serve's StreamOptions read
    `bool | None` (null: unset); unset, it takes our default (OpenAI's: usage only when include_usage is true)."""
    for options in ({"include_usage": None}, {"continuous_usage_stats": None}, {"include_obfuscation": None},
                    {"include_usage": None, "continuous_usage_stats": True}):
        req = completion(stream=True, stream_options=options)
        assert (req.include_usage, req.continuous_usage) == (False, False), options
    req = completion(stream=True, stream_options={"include_usage": True, "continuous_usage_stats": None})
    assert (req.include_usage, req.continuous_usage) == (True, False)


def test_empty_stream_options_without_stream_are_taken():
    """`"stream_options": {}` without `"stream": true` was a 400 ('with "stream": true'), where trtllm-serve's and
    vLLM's validators refuse only options that are truthy (`if data.get("stream_options") and not
    data.get("stream")`): {} and null pass, and add nothing. Options that say something still need the stream."""
    for sent in ({}, None):
        for fields in ({}, {"stream": False}):
            req = completion(stream_options=sent, **fields)
            assert (req.stream, req.include_usage, req.continuous_usage) == (False, False, False)
            assert chat(stream_options=sent, **fields).stream is False
    for options in ({"include_usage": False}, {"include_usage": None}):
        with pytest.raises(RequestError, match='^"stream_options" must be .*with "stream": true$'):
            completion(stream_options=options)


NO_BOOLS = [" true ", "true ", "\ttrue", "\xa0true", "", "2", "1.0", "0.0", "01", "+1", "-0", "yes please", "nope",
            "ok", "ＴＲＵＥ", "\u0130", 2, -1, 10 ** 30, 0.5, 1e-300, float("nan"), float("inf"), [True], {}]


@pytest.mark.parametrize("sent", NO_BOOLS, ids=lambda s: ascii(s)[:16])
def test_what_is_no_bool_is_refused_as_before(sent):
    for field in ("stream", "echo", "ignore_eos"):
        with pytest.raises(RequestError, match=f'^"{field}" must be true or false$') as e:
            completion(**{field: sent})
        assert e.value.param == field
    with pytest.raises(RequestError, match='^"logprobs" must be true or false$'):
        chat(logprobs=sent)
    for option in ("include_usage", "continuous_usage_stats"):
        with pytest.raises(RequestError, match='^"stream_options" must be {"include_usage": true or false'):
            completion(stream=True, stream_options={option: sent})


@pytest.mark.parametrize("sent", TRUE + FALSE + NO_BOOLS + ["\u212a", "ye\u017f", "true\x00", "1e0"],
                         ids=lambda s: ascii(s)[:16])
def test_bools_are_read_as_pydantic_reads_them(sent):
    """The reading against pydantic 2's own, from the JSON a client sends (not a dependency: only where installed)."""
    import json
    import math

    from redrafter_trt.serve_lax import lax_bool

    pydantic = pytest.importorskip("pydantic")
    if isinstance(sent, float) and not math.isfinite(sent):
        sent = str(sent)  # no JSON number: its text
    try:
        want = pydantic.TypeAdapter(bool).validate_json(json.dumps(sent))
    except pydantic.ValidationError:
        want = None
    assert lax_bool(sent) is want


@pytest.mark.parametrize("chat_, field, sent", [
    (False, "skip_special_tokens", "true"), (False, "skip_special_tokens", 1), (False, "use_beam_search", "off"),
    (False, "use_beam_search", 0.0), (False, "include_stop_str_in_output", "n"),
    (False, "spaces_between_special_tokens", "Y"), (False, "add_special_tokens", "yes"),
    (True, "add_special_tokens", "0"), (True, "continue_final_message", "false"),
    (True, "add_generation_prompt", "on"), (True, "skip_special_tokens", 1.0)])
def test_a_bool_field_that_changes_nothing_is_read_as_parse_reads_bools(chat_, field, sent):
    """`"skip_special_tokens": "true"` was refused as changing the answer, where vLLM and trtllm-serve read true."""
    from redrafter_trt.serve_request import refuse_unsupported

    body = ({"messages": ASK} if chat_ else {"prompt": "Hi"}) | {field: sent}
    parse(body, chat=chat_, model_name="m", max_output_len=16)
    refuse_unsupported(body, chat_, sampling=True)


@pytest.mark.parametrize("chat_, field, sent", [
    (False, "skip_special_tokens", "false"), (False, "skip_special_tokens", 0), (False, "use_beam_search", "yes"),
    (False, "use_beam_search", 1.0), (False, "add_special_tokens", "off"),
    (True, "add_special_tokens", "1"), (True, "add_generation_prompt", "no"), (True, "continue_final_message", 1)])
def test_a_bool_field_that_changes_the_answer_is_refused_in_any_form(chat_, field, sent):
    from redrafter_trt.serve_request import refuse_unsupported

    body = ({"messages": ASK} if chat_ else {"prompt": "Hi"}) | {field: sent}
    with pytest.raises(RequestError, match=f'"{field}" is not implemented by this server'):
        refuse_unsupported(body, chat_, sampling=True)


@pytest.mark.parametrize("max_tokens, newer", [(5, 10), (10, 5)])
def test_max_tokens_and_max_completion_tokens_that_disagree_either_way_are_refused(max_tokens, newer):
    with pytest.raises(RequestError, match=f'"max_tokens" {max_tokens} and "max_completion_tokens" {newer} disagree: '
                                           'send one of them') as e:
        chat(max_tokens=max_tokens, max_completion_tokens=newer)
    assert e.value.param == "max_completion_tokens"
    assert chat(max_tokens=5, max_completion_tokens=5).max_tokens == 5


def test_an_assistants_tool_calls_without_a_tool_parser_are_refused():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    with pytest.raises(RequestError, match=r'"messages"\[1\]: tool calls and results need tool calling: start the '
                                           'server with --tool-parser') as e:
        parse({"messages": ASK + [{"role": "assistant", "content": None, "tool_calls": [call]}]}, chat=True,
              model_name="m", max_output_len=16)
    assert e.value.param == "messages.[1].tool_calls"


def test_top_logprobs_0_without_logprobs_true_is_refused():
    with pytest.raises(RequestError, match='"top_logprobs" needs "logprobs": true') as e:
        chat(top_logprobs=0)
    assert e.value.param == "top_logprobs"
    assert chat(logprobs=True, top_logprobs=0).logprobs == 0


def test_a_seed_is_any_64_bit_integer():
    assert [completion(seed=s).seed for s in (2 ** 63 - 1, -2 ** 63)] == [2 ** 63 - 1, 0]  # taken mod 2**63
    for seed in (2 ** 63, -2 ** 63 - 1):
        with pytest.raises(RequestError, match='"seed" must be a 64-bit integer'):
            completion(seed=seed)


def test_at_most_64_prompts_are_taken_in_one_request():
    assert len(completion(prompt=["Hi"] * 64).prompts) == 64
    with pytest.raises(RequestError, match="65 prompts in one request: send at most 64") as e:
        completion(prompt=["Hi"] * 65)
    assert e.value.param == "prompt"


@pytest.mark.parametrize("prompt", [[True, False], [[1, 2], [True]]])
def test_booleans_are_no_token_ids(prompt):
    with pytest.raises(RequestError, match='"prompt" must be a string, a list of strings, a list of token ids'):
        completion(prompt=prompt)
