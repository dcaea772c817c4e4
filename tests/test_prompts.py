"""load_prompts: every accepted record shape, file formats, and one-line errors naming the line."""

import json
import re
from pathlib import Path

import pytest

from redrafter_trt.errors import ConfigError
from redrafter_trt.prompts import load_prompts

DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data")  # ../shared beside the checkout


def write(tmp_path, text, name="p.jsonl"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_all_record_shapes(tmp_path):
    lines = [
        {"prompt": "a"},
        {"turns": ["b", "second"]},
        {"question": "c", "answer": "x"},
        {"instruction": "d", "input": ""},
        {"instruction": "d", "input": "more"},
        {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "e"}, {"from": "gpt", "value": "f"}]},
        {"conversations": [{"role": "user", "content": "g"}]},
        "h",
    ]
    path = write(tmp_path, "\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert load_prompts(path) == ["a", "b", "c", "d", "d\n\nmore", "e", "g", "h"]


def test_sharegpt_json_list(tmp_path):
    prompts = load_prompts(f"{DATA}/fastchat_dummy_conversation.json")
    assert prompts[0] == "Who are you?" and len(prompts) > 10


def test_mt_bench_first_turns():
    prompts = load_prompts(f"{DATA}/mt_bench_questions.jsonl")
    assert len(prompts) == 80 and prompts[0].startswith("Compose an engaging travel blog")


@pytest.mark.parametrize("bad, why", [
    ("{not json", "not valid JSON"),
    ('{"text": "x"}', "no prompt"),
    ('{"turns": []}', "turns"),
    ('{"prompt": ""}', "non-empty"),
    ('[1, 2]', "expected a JSON object"),
    ('{"conversations": [{"from": "gpt", "value": "x"}]}', "no human"),
])
def test_malformed_line_names_line(tmp_path, bad, why):
    path = write(tmp_path, '{"prompt": "ok"}\n\n' + bad + "\n")
    with pytest.raises(ConfigError) as e:
        load_prompts(path)
    msg = str(e.value)
    assert "line 3" in msg and why in msg and "\n" not in msg


DEEP = "[" * 3000 + "]" * 3000  # past the recursion limit Python's json reads nesting with (a RecursionError)
BIG = "1" + "0" * 5000  # past int()'s 4300 digits (a ValueError that is no JSONDecodeError)


@pytest.mark.parametrize("value, why", [(DEEP, "nested too deeply to read"),
                                        (BIG, "a number too long to read: 5001 digits")], ids=["deep", "big"])
@pytest.mark.parametrize("layout, where", [("{}\n", "line 1"), ('{"prompt": "ok"}\n\n{}\n', "line 3"),
                                           ("[{}]", "line 1")], ids=["first-line", "later-line", "json-list"])
def test_json_nested_too_deeply_or_a_number_too_long_names_the_line(tmp_path, value, why, layout, where):
    """A fuzzing review: both were tracebacks (RecursionError, ValueError) from every reader of jsonl and JSON lists
    (train --data, run --input-file, bench --prompts, convert --calib-data), which caught JSONDecodeError alone."""
    path = write(tmp_path, layout.replace("{}", "{\"question\": %s, \"answer\": \"a\"}" % value))
    with pytest.raises(ConfigError) as e:
        load_prompts(path)
    msg = str(e.value)
    assert why in msg and where in msg and "\n" not in msg and len(msg) < 300, msg


def test_empty_and_missing(tmp_path):
    with pytest.raises(ConfigError, match="no prompts"):
        load_prompts(write(tmp_path, "\n  \n"))
    # the fix named the jsonl alone, one prompt a line, as if a .txt or a ShareGPT .json were not read
    with pytest.raises(ConfigError, match=r"does not exist: pass a jsonl file \(one record a line\), a ShareGPT "
                                          r"\.json or a \.txt of prompts, one a line"):
        load_prompts(tmp_path / "nope.jsonl")


def test_a_dangling_link_is_named_with_its_target(tmp_path):
    """A review: `--input-file LINK` / `--prompts LINK`, a symbolic link to nothing, said `does not exist`, which `ls`
    contradicts; the link and its target are named, as other readers name them."""
    (tmp_path / "link.jsonl").symlink_to("gone.jsonl")
    with pytest.raises(ConfigError, match=f"input file {tmp_path}/link.jsonl is a symbolic link to gone.jsonl, which "
                                          f"does not exist"):
        load_prompts(tmp_path / "link.jsonl")


@pytest.mark.parametrize("name", ["prompts.txt", "PROMPTS.TXT"])
def test_a_txt_file_holds_one_prompt_per_line(tmp_path, name):
    """TensorRT-LLM's run.py reads `--input_file prompts.txt` one prompt per line; here it was read as jsonl and
    refused ('line 1 is not valid JSON'), and a line like '42' or '"quoted"' would have been read as JSON. Each line is
    read as run.py's readlines gives it: its newline and spaces kept, a blank line a prompt too (they were dropped)."""
    path = write(tmp_path, 'What is 2+2?\r\n\n  \n{"prompt": "not json here"}\n42\n"quoted"', name)
    assert load_prompts(path) == ["What is 2+2?\n", "\n", "  \n", '{"prompt": "not json here"}\n', "42\n", '"quoted"']
    with pytest.raises(ConfigError, match="no prompts"):
        load_prompts(write(tmp_path, "\n \n", name))


def test_a_txt_file_gives_the_token_ids_run_py_gives(smollm2, tmp_path):
    """The engine (through run.py) and `run` must answer a .txt file's prompts alike: its lines were stripped of their
    newline and surrounding spaces, so 'Once upon' was [6403, 1980] here and [6403, 1980, 198] in run.py, which
    continued it otherwise."""
    from transformers import AutoTokenizer

    from redrafter_trt.tokens import encode_prompts

    tok = AutoTokenizer.from_pretrained(smollm2)
    path = write(tmp_path, "Once upon\n  The basic idea of a Transformer model is  \n\nlast, unended", "t.txt")
    with open(path, encoding="utf-8", errors="replace") as f:  # run.py's parse_input
        run_py = tok(f.readlines(), add_special_tokens=True)["input_ids"]
    assert encode_prompts(tok, load_prompts(path), False) == run_py


def test_a_tokenizer_that_adds_a_bos_gives_it_to_plain_prompts_once_and_chat_prompts_their_templates_alone(smollm2):
    """As run.py encodes a prompt (add_special_tokens: a Llama tokenizer's BOS first) for plain text; a chat prompt's
    template writes its own special tokens, so the tokenizer adds none (no second BOS). SmolLM2's tokenizer adds
    none, so one made to add `<|endoftext|>` first stands in for a Llama one."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    from redrafter_trt.tokens import chat_text, encode_prompts

    tok = AutoTokenizer.from_pretrained(smollm2)
    bos = tok.convert_tokens_to_ids("<|endoftext|>")
    tok._tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A",
                                                       special_tokens=[("<|endoftext|>", bos)])
    plain = tok("Hi there", add_special_tokens=False)["input_ids"]
    assert encode_prompts(tok, ["Hi there"], False) == [[bos, *plain]]
    assert encode_prompts(tok, ["Hi there"], True) == [tok(chat_text(tok, "Hi there"), add_special_tokens=False)
                                                        ["input_ids"]]


def test_template_variables_for_plain_prompts_are_refused(smollm2):
    """Prompts not rendered in the chat template (chat=False: bench's and acceptance's --no-chat) with
    --chat-template-kwargs given: the variables would change nothing, and are refused, not ignored."""
    from redrafter_trt.tokens import KWARGS_WITHOUT_TEMPLATE, TEMPLATE_KWARGS, auto_tokenizer, encode_prompts

    tok = auto_tokenizer(smollm2)
    plain = encode_prompts(tok, ["Hi"], False)
    assert plain == [tok("Hi")["input_ids"]]
    setattr(tok, TEMPLATE_KWARGS, {"enable_thinking": False})  # as auto_tokenizer sets them (SmolLM2's reads none)
    with pytest.raises(ConfigError) as e:
        encode_prompts(tok, ["Hi"], False)
    assert str(e.value) == KWARGS_WITHOUT_TEMPLATE


def test_a_txt_files_byte_order_mark_is_dropped_where_run_py_keeps_it_and_the_readme_says_so(tmp_path):
    """A .txt saved with a UTF-8 byte-order mark (as some Windows editors write it): `run` drops it (read_text's
    utf-8-sig), where run.py's open(encoding='utf-8') keeps U+FEFF at its first prompt's start, so that prompt's token
    ids differ, while the README said run.py and `run` see the same token ids. The mark stays dropped (it is no part
    of the prompt), and the README says so where it makes that claim."""
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffOnce upon\nThe end\n".encode("utf-8"))
    with open(path, encoding="utf-8", errors="replace") as f:  # run.py's parse_input
        run_py = f.readlines()
    assert run_py[0].startswith("\ufeff") and load_prompts(path) == [run_py[0].removeprefix("\ufeff"), run_py[1]]
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    claim = re.search(r"\(readlines: [^;]*see the same token ids[^;]*;", readme)
    assert claim and "byte-order mark" in claim.group(), claim and claim.group()


@pytest.mark.parametrize("name", ["prompts.tsv", "prompts", "questions.md"])
def test_plain_text_under_another_name_is_told_to_be_named_txt(tmp_path, name):
    """A file of plain prompts not named .txt was told only 'line 1 is not valid JSON: write one JSON object per
    line', as if it had to be rewritten; naming it .txt reads it one prompt per line. A jsonl file broken further
    down keeps the plain jsonl error."""
    path = write(tmp_path, "What is 2+2?\nName a color.\n", name)
    with pytest.raises(ConfigError, match=r"line 1 is not valid JSON .*: write one JSON object per line, or name "
                                          r"the file \.txt to read it one prompt per line$"):
        load_prompts(path)
    path = write(tmp_path, '{"prompt": "a"}\nName a color.\n', name)
    with pytest.raises(ConfigError, match=r"line 2 is not valid JSON .*: write one JSON object per line$"):
        load_prompts(path)


@pytest.mark.parametrize("name", ["ids.csv", "IDS.NPY"])
def test_a_run_py_token_id_file_is_refused_where_text_prompts_are_read(tmp_path, name):
    """TensorRT-LLM run.py's .csv (and .npy) of token ids was read as JSON and told to be named .txt, which read its
    digits as text. bench, acceptance and calibration read text: they say so; `run` reads the ids."""
    with pytest.raises(ConfigError, match=r"(?i)ids\.(csv|NPY) holds token ids \(TensorRT-LLM run\.py's \.csv or \.npy\), "
                                          r"read by `redrafter-trt run` alone: pass the prompts as text, a \.txt"):
        load_prompts(write(tmp_path, "1,504,3\n1,2\n", name))


def test_plain_text_opening_with_a_bracket_is_told_to_be_named_txt(tmp_path):
    """Plain prompts whose first opens with "[" (Llama-2's "[INST] ... [/INST]", a numbered "[1] ...") were read as
    a JSON list and told only 'is not valid JSON: fix it, or write jsonl'; a JSON list broken past its first line
    keeps that error."""
    path = write(tmp_path, "[INST] Tell me a joke [/INST]\n[1] Name a color.\n", "prompts.md")
    with pytest.raises(ConfigError, match=r"is not valid JSON .*: fix it, or write jsonl, or name the file \.txt to "
                                          r"read it one prompt per line$"):
        load_prompts(path)
    path = write(tmp_path, '[\n{"prompt": "a"},\n{"prompt": b}\n]\n', "prompts.json")
    with pytest.raises(ConfigError, match=r"is not valid JSON \(Expecting value: line 3\): fix it, or write jsonl$"):
        load_prompts(path)


def test_a_json_list_cut_in_a_string_is_told_where_the_string_starts(tmp_path):
    """A JSON list cut short inside a string (a download or copy broken off) was told '(Unterminated string starting at
    at line 3)': json's message ends in 'at', and the line was appended with another."""
    path = write(tmp_path, '[\n{"prompt": "a"},\n{"prompt": "b', "prompts.json")
    with pytest.raises(ConfigError, match=r"is not valid JSON \(Unterminated string starting at: line 3\): fix it"):
        load_prompts(path)


def test_json_list_of_non_objects_names_the_record_and_the_shape(tmp_path):
    f = tmp_path / "arr.jsonl"
    f.write_text('[1, 2, 3]\n')
    with pytest.raises(ConfigError, match=r'record 1 of its JSON list: expected a JSON object like \{"prompt"'):
        load_prompts(f)


@pytest.mark.parametrize("text", ['{"prompt": "a"}\n', '[{"prompt": "a"}]'])
def test_a_byte_order_mark_is_read_past(tmp_path, text):
    """Windows editors save UTF-8 with a byte-order mark: json refused it ("Unexpected UTF-8 BOM")."""
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_prompts(path) == ["a"]


def test_self_prompts_draws_exactly_num_samples():
    """`scripts/self_prompts.py --num 10` drew 10 // 32 = 0 batches and wrote an empty file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("self_prompts",
                                                  Path(__file__).resolve().parents[1] / "scripts" / "self_prompts.py")
    self_prompts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(self_prompts)
    assert self_prompts.batch_sizes(10, 32) == [10]
    assert self_prompts.batch_sizes(70, 32) == [32, 32, 6]
    assert self_prompts.batch_sizes(64, 32) == [32, 32]


def test_a_file_that_is_one_pretty_printed_json_object_is_one_record(tmp_path):
    """It was read as jsonl and refused: "line 1 is not valid JSON: write one JSON object per line"."""
    from redrafter_trt.train.data import read_conversations

    path = tmp_path / "one.json"
    path.write_text(json.dumps({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]},
                               indent=2))
    assert load_prompts(path) == ["Hi"]
    (conv,) = read_conversations(path)
    assert conv.messages[1] == {"role": "assistant", "content": "Yo"}
    path.write_text(json.dumps({"text": "x"}, indent=2))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))} \(its one JSON object\): no prompt"):
        load_prompts(path)
    path.write_text('{"prompt": "a"}\n{"prompt": \n')  # jsonl with a broken line stays a jsonl error
    with pytest.raises(ConfigError, match=r"line 2 is not valid JSON"):
        load_prompts(path)


def test_a_file_of_openai_messages_that_train_takes_gives_run_and_bench_its_prompts(tmp_path):
    """train --data read {"messages": [...]}; run --input-file, bench --prompts and convert's calibration prompts
    refused the same file ("no prompt: expected one of the keys ...")."""
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                                             {"role": "assistant", "content": "A"}]}) + "\n")
    assert load_prompts(path) == ["Q"]
    path.write_text(json.dumps({"messages": [{"role": "assistant", "content": "A"}]}) + "\n")
    with pytest.raises(ConfigError, match=r"line 1: `messages` has no human/user message$"):
        load_prompts(path)


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"])
def test_a_line_separator_inside_a_string_ends_no_line(tmp_path, sep):
    """json.dumps(ensure_ascii=False) writes U+2028, U+2029 and U+0085 as they are inside strings (JSON allows them),
    and str.splitlines cut a line there: a valid jsonl file was refused as 'line 1 is not valid JSON' by run
    --input-file and train --data alike, and a .txt file gave two prompts where TensorRT-LLM's run.py (readlines) reads
    one. Lines end at newlines alone."""
    from redrafter_trt.train.data import read_conversations

    path, txt = tmp_path / "p.jsonl", tmp_path / "p.txt"
    path.write_text(json.dumps({"question": f"one{sep}two", "answer": f"a{sep}b"}, ensure_ascii=False) + "\n"
                    + json.dumps({"prompt": "three"}) + "\n", encoding="utf-8")
    txt.write_bytes(f"one{sep}two\r\nthree\rfour\n".encode())
    assert load_prompts(path) == [f"one{sep}two", "three"]
    first = read_conversations(path)[0]
    assert first.messages[1]["content"] == f"a{sep}b" and first.source.endswith("line 1")
    assert load_prompts(txt) == [f"one{sep}two\n", "three\n", "four\n"]


def test_half_a_surrogate_pair_is_refused_naming_the_line(tmp_path):
    """A JSON escape "\\ud83d" alone (an emoji cut in two; some ShareGPT dumps have them) is read by json as a lone
    surrogate, which no tokenizer takes: run, bench and train ended in tokenizers' TypeError traceback. The prompt
    reader names the line; train leaves such a record out with its warning, as other unusable records."""
    from redrafter_trt.train.data import read_conversations

    path = write(tmp_path, '{"prompt": "fine \\ud83d\\ude00"}\n{"prompt": "cut \\ud83d"}\n')
    with pytest.raises(ConfigError, match=r"line 2: `prompt` holds half a surrogate pair \('\\ud83d' at character 4\), "
                                          r"not text$"):
        load_prompts(path)
    records = ['{"question": "ok", "answer": "fine"}', '{"question": "ok", "answer": "cut \\ud83d"}',
               '{"system": "\\udc00", "question": "q", "answer": "a"}',
               '{"conversations": [{"from": "human", "value": "\\ud800"}, {"from": "gpt", "value": "a"}]}']
    convs = read_conversations(write(tmp_path, "\n".join(records) + "\n"))
    assert [c.source.rsplit(" ", 1)[1] for c in convs] == ["1"]


def test_a_records_system_prompt_renders_as_train_renders_it(tmp_path, smollm2):
    """run, bench, acceptance took a record's first human turn alone and the chat template put its default system
    prompt before it, while train renders the record's own (its system message, else its `system` column): the
    drafter was measured on prompts it never trained on. Both now render the same tokens; plain text is the turn."""
    from redrafter_trt.tokens import auto_tokenizer, encode_prompts
    from redrafter_trt.train.data import prompt_ids, read_conversations

    records = [
        {"conversations": [{"from": "system", "value": "You are a pirate."}, {"from": "human", "value": "Q1"},
                           {"from": "gpt", "value": "A1"}]},
        {"messages": [{"role": "user", "content": "Q2"}], "system": "Answer in French."},
        {"instruction": "Q3", "output": "A3", "system": "Be brief."},
        {"conversations": [{"from": "gpt", "value": "Hi!"}, {"from": "developer", "value": "Own wins."},
                           {"from": "human", "value": "Q4"}], "system": "The column loses."},
        {"messages": [{"role": "user", "content": "Q5"}], "system": ""},
    ]
    path = write(tmp_path, "".join(json.dumps(r) + "\n" for r in records))
    tok = auto_tokenizer(smollm2)
    prompts = load_prompts(path)
    assert prompts == ["Q1", "Q2", "Q3", "Q4", "Q5"]
    assert encode_prompts(tok, prompts, True) == [prompt_ids(tok, c) for c in read_conversations(path)]
    assert "You are a pirate." in tok.decode(encode_prompts(tok, prompts, True)[0])
    assert "The column loses." not in tok.decode(encode_prompts(tok, prompts, True)[3])
    assert encode_prompts(tok, prompts, False) == [tok(q)["input_ids"] for q in prompts]  # as TensorRT-LLM's run.py
    path = write(tmp_path, json.dumps({"prompt": "Q", "system": 5}) + "\n")
    with pytest.raises(ConfigError, match=r"line 1: `system` is 5: write the system prompt as a string$"):
        load_prompts(path)


def test_an_empty_first_human_turn_is_named(tmp_path):
    """A ShareGPT record whose first human turn is empty was refused as '`conversations` must be a non-empty
    string', which it is not (it is a list)."""
    path = write(tmp_path, json.dumps({"conversations": [{"from": "system", "value": "S"}, {"from": "human",
                                                                                               "value": " "}]}) + "\n")
    with pytest.raises(ConfigError, match=r"line 1: `conversations` message 2, its first human/user message, is "
                                          r"empty: write its prompt, or remove that record$"):
        load_prompts(path)


def test_a_template_refusing_a_system_message_is_named(tmp_path, smollm2):
    """A chat template that refuses a system role (Gemma's) is named for the prompt's system message, not as a
    template that does not render at all."""
    from redrafter_trt.prompts import Prompt
    from redrafter_trt.tokens import auto_tokenizer, chat_text

    tok = auto_tokenizer(smollm2)
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
                         "supported') }}{% endif %}{{ m['content'] }}{% endfor %}")
    assert chat_text(tok, Prompt("Q")) == "Q"
    turns = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    for tools in ((), [WEATHER]):  # a review: with tools (which render without the system message) they were blamed
        with pytest.raises(ConfigError, match=r"refuses the system message of the prompt 'Q' \(System role not "
                                              r"supported\): remove the system prompt from its record, or turn chat "
                                              r"off$"):
            chat_text(tok, Prompt("Q", turns, tools))
    # a template that renders no prompt at all does not render, system message or not (a review: it was told to
    # refuse the system message)
    tok.chat_template = "{{ raise_exception('Broken') }}"
    with pytest.raises(ConfigError, match=r"^the tokenizer's chat template does not render \(Broken\): fix "):
        chat_text(tok, Prompt("Q", turns))


# agent data: the prompt is answered with a tool call, the tool's result and the final answer after it
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city now",
                                            "parameters": {"type": "object", "required": ["city"],
                                                           "properties": {"city": {"type": "string"}}}}}
OPENAI_TOOLS = {"messages": [  # an OpenAI fine-tuning file's line: the call's content null beside tool_calls
    {"role": "system", "content": "You are a weather assistant."},
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "assistant", "content": "It is 18C."}], "tools": [WEATHER], "parallel_tool_calls": False}
GLAIVE = {"conversations": [  # glaive-function-calling-v2 as LLaMA-Factory's glaive_toolcall writes it
    {"from": "human", "value": "I need to convert 500 US dollars to Euros."},
    {"from": "function_call", "value": '{"name": "convert_currency", "arguments": {"amount": 500, "from": "USD", '
                                       '"to": "EUR"}}'},
    {"from": "observation", "value": '{"converted_amount": 425.5}'},
    {"from": "gpt", "value": "500 US dollars are about 425.50 Euros."}],
    "tools": '[{"name": "convert_currency", "parameters": {"type": "object"}}]'}
GLAIVE_CHATML = {"conversations": [  # and as its ChatML conversion (function-calling-chatml) writes it
    {"from": "system", "value": "You are a helpful assistant with access to the following functions."},
    {"from": "human", "value": "Create a contact for John Doe."},
    {"from": "function-call", "value": '{"name": "create_contact", "arguments": \'{"name": "John Doe"}\'}'},
    {"from": "function-response", "value": '{"status": "success"}'},
    {"from": "gpt", "value": "John Doe is in your contacts now."}]}
TOOL_CALLING = [OPENAI_TOOLS, GLAIVE, GLAIVE_CHATML]


def test_a_tool_calling_records_prompt_is_its_turns_before_the_call(tmp_path):
    """Agent data (OpenAI fine-tuning files with tools, glaive's function calling as LLaMA-Factory and its ChatML
    conversion write it) answers a prompt with a tool call: an assistant turn of null content beside `tool_calls`,
    or a `function_call` / `function-call` turn. run --input-file, bench and acceptance, which read nothing after a
    prompt's first answer, refused every such record ('... whose `value`/`content` is None, not a string', 'role
    'function_call''). Its prompt is now read up to the call; a tool turn before it is still refused."""
    path = write(tmp_path, "".join(json.dumps(r) + "\n" for r in TOOL_CALLING))
    prompts = load_prompts(path)
    assert prompts == ["What's the weather in Paris?", "I need to convert 500 US dollars to Euros.",
                       "Create a contact for John Doe."]
    assert prompts[0].messages() == OPENAI_TOOLS["messages"][:2]
    assert prompts[2].messages() == [{"role": "system", "content": GLAIVE_CHATML["conversations"][0]["value"]},
                                     {"role": "user", "content": "Create a contact for John Doe."}]
    early = [{"messages": [OPENAI_TOOLS["messages"][1], *OPENAI_TOOLS["messages"][3:]]},  # a tool turn, then the answer
             {"conversations": [GLAIVE["conversations"][1], *GLAIVE["conversations"]]}]  # a call before the user's turn
    for record, role in zip(early, ["tool", "function_call"]):
        write(tmp_path, json.dumps(record) + "\n")
        with pytest.raises(ConfigError, match=rf"line 1: `\w+` has a message with role '{role}': expected human/user"):
            load_prompts(path)


def test_a_records_tools_are_given_to_the_chat_template_as_train_gives_them(tmp_path):
    """A record's tool definitions (OpenAI's `tools`, its legacy `functions`, LLaMA-Factory's and xLAM's JSON string
    of bare definitions) were not given to the chat template: run --input-file, bench and acceptance rendered the
    prompt as if the base had no tools, and train --distill had the base answer it so. They are given as `tools`, a
    bare definition as OpenAI's `tools` lists it, as train gives them; a record without tools renders as before."""
    from test_train_data import TOOLED, make_tokenizer

    from redrafter_trt.tokens import encode_prompts
    from redrafter_trt.train.data import prompt_ids, read_conversations

    legacy = {"messages": OPENAI_TOOLS["messages"][1:2], "functions": [WEATHER["function"]]}
    path = write(tmp_path, "".join(json.dumps(r) + "\n" for r in [*TOOL_CALLING, legacy, {"prompt": "Hi"}]))
    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = TOOLED
    prompts = load_prompts(path)
    assert prompts[3].tools == (WEATHER,) and prompts[2].tools == prompts[4].tools == ()
    ids = encode_prompts(tok, prompts, True)
    assert [tok.decode(i).split("<|im_end|>")[0] for i in ids] == [
        "<|im_start|>system\nTools: get_weather", "<|im_start|>system\nTools: convert_currency",
        "<|im_start|>system\nYou are a helpful assistant with access to the following functions.",
        "<|im_start|>system\nTools: get_weather", "<|im_start|>system\nBe brief."]
    assert ids == [prompt_ids(tok, c) for c in read_conversations(path, prompts_only=True)]
    assert encode_prompts(tok, prompts, False) == [tok(str(p))["input_ids"] for p in prompts]  # plain text: the turn


@pytest.mark.parametrize("tools", ["get_weather", ["get_weather"], [1], 3])
def test_tools_that_are_no_list_of_definitions_are_named_with_the_fix(tmp_path, tools):
    """A `tools` value that is no list of objects (nor a JSON string of one) is one line naming the record's line,
    what it holds and how to write it; train skips the record, and refuses a file of no other."""
    from redrafter_trt.train.data import read_conversations

    path = write(tmp_path, json.dumps({"prompt": "Q", "answer": "A", "tools": tools}) + "\n")
    why = (r"`tools` must list the tool definitions, \[\{\"type\": \"function\", \"function\": \{\"name\": \.\.\., "
           r"\"parameters\": \.\.\.\}\}, \.\.\.\] \(or that list as a JSON string\), not " + re.escape(repr(tools)))
    with pytest.raises(ConfigError, match=rf" line 1: {why}$"):
        load_prompts(path)
    with pytest.raises(ConfigError, match=rf"holds no usable record: {why} \(1 record, the first at line 1\): fix the "):
        read_conversations(path, prompts_only=True)


@pytest.mark.parametrize("tools", [WEATHER, [json.dumps(WEATHER)], WEATHER["function"], [json.dumps(WEATHER["function"])]])
def test_one_tool_alone_or_tools_each_a_json_string_are_read(tmp_path, tools):
    """A record's one tool as an object (not in a list), and a list of tools each a JSON string (as parquet exports
    of tool-calling sets store them) were refused by run, and skipped by train, as no list of definitions."""
    path = write(tmp_path, json.dumps({"prompt": "Q", "tools": tools}) + "\n")
    assert load_prompts(path)[0].tools == (WEATHER,)


def test_a_template_refusing_a_prompts_tools_is_named_for_them(tmp_path):
    """A chat template that refuses a record's tools (one written {"type": "function", "function": "get_weather"},
    which a template reading `function.name` cannot render) was blamed on the template itself ('does not render: fix
    or re-download its tokenizer_config.json'), or on the prompt's system message, which both render without the
    tools. run --input-file, bench and acceptance now name the tools and how to write them."""
    from test_train_data import TOOLED, make_tokenizer

    from redrafter_trt.tokens import encode_prompts

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = TOOLED
    bad = [{"type": "function", "function": "get_weather"}]
    path = write(tmp_path, json.dumps({"prompt": "Q", "tools": bad}) + "\n"
                 + json.dumps({"prompt": "R", "system": "S", "tools": bad}) + "\n")
    for prompt in load_prompts(path):
        with pytest.raises(ConfigError, match=rf"^the tokenizer's chat template refuses the tools of the prompt "
                                              rf"'{prompt}' \(.+\): write each as OpenAI's `tools` lists one, "
                                              r"\{\"type\": \"function\", \"function\": \{\"name\": \.\.\., "
                                              r"\"parameters\": \.\.\.\}\}, or remove `tools` from its record$"):
            encode_prompts(tok, [prompt], True)


def test_load_prompts_says_it_leaves_out_the_user_turns_after_an_answer(tmp_path, caplog):
    """run --input-file, bench and acceptance send a conversation up to its first answer: a multi-turn chat file (a
    Llama-3.1 user's history of several exchanges) lost every later user turn without a word, where train --distill
    says so. They say it too; MT-Bench's `turns` (a first turn, by design), a tool call's result and an answer
    alone say nothing."""
    hi = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    lines = [{"messages": [*hi, {"role": "user", "content": "Bye"}]}, {"messages": hi},
             {"turns": ["first", "second"]}, {"prompt": "p", "history": [["Hi", "Hello"]]}, OPENAI_TOOLS]
    path = write(tmp_path, "".join(json.dumps(r) + "\n" for r in lines))
    with caplog.at_level("WARNING"):
        prompts = load_prompts(path)
    assert prompts == ["Hi", "Hi", "first", "Hi", "What's the weather in Paris?"]  # as before
    assert "2 conversations of 5 hold user turns after an answer: each is sent up to its first answer, " \
           "and those turns are left out" in caplog.text
    caplog.clear()
    write(tmp_path, "".join(json.dumps(r) + "\n" for r in lines[1:3]))
    with caplog.at_level("WARNING"):
        load_prompts(path)
    assert "after an answer" not in caplog.text
    write(tmp_path, json.dumps(lines[0]) + "\n")
    with caplog.at_level("WARNING"):
        load_prompts(path)
    assert "1 conversation of 1 holds user turns after an answer" in caplog.text  # not "1 of 1 prompts' ... have"


def test_a_user_turn_after_the_answer_counts_though_a_later_turn_cannot_be_read(tmp_path, caplog):
    """A review: a conversation whose later user turn is followed by a turn the prompt never reads and train would
    refuse (a role of no chat template's, an answer's weight 2) was counted as having no user turn after its answer:
    its readable later turns were left out without a word. A turn that cannot be read stops the count there, not
    before it."""
    hi = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    lines = [{"messages": [*hi, {"role": "user", "content": "Bye"}, {"role": "robot", "content": "beep"}]},
             {"messages": [*hi, {"role": "user", "content": "Bye"},
                           {"role": "assistant", "content": "x", "weight": 2}]},
             {"messages": [*hi, {"role": "robot", "content": "beep"}, {"role": "user", "content": "Bye"}]}]
    path = write(tmp_path, "".join(json.dumps(r) + "\n" for r in lines))
    with caplog.at_level("WARNING"):
        assert load_prompts(path) == ["Hi"] * 3
    assert "2 conversations of 3 hold user turns after an answer" in caplog.text, caplog.text


def test_a_txt_file_not_utf8_is_told_to_be_saved_as_utf8_not_as_jsonl(tmp_path):
    """A Latin-1 .txt was told 'save it as UTF-8 jsonl', another format than it is in."""
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9 au lait\n")
    with pytest.raises(ConfigError, match=r"latin1\.txt is not UTF-8 text \(line 1, byte 3\): save it as UTF-8$"):
        load_prompts(path)


def test_every_count_of_prompts_is_taken_spread_over_the_file():
    """A review: bench's --num-prompts took a file's first K, and MT-Bench is sorted by category (its first 20 are
    writing and roleplay); the scripts' --num-prompts and --limit and train_smollm2's held-out MT-Bench prompts took
    the first N too, as bench_serve.py its requests. One way now: prompts.take_spread, as bench and the quickstart take them. (convert's --calib-size
    takes the first N of a set shipped interleaved for it, three GSM8K problems to a conversation: every 4th of it
    would be GSM8K alone.)"""
    root = Path(__file__).resolve().parent.parent
    first_n = re.compile(r"(load_prompts|read_conversations)\(.*\)\s*\[\s*(0\s*)?:")  # bench_serve's (... * n)[:n] too
    found = [f"{path.relative_to(root)}:{n}" for folder in ("redrafter_trt", "scripts")
             for path in sorted((root / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if first_n.search(line)]
    assert not found, found


def test_a_sharegpt_json_list_after_blank_lines_or_spaces_is_a_json_list(tmp_path):
    """A .json list opening with a newline or spaces before its `[` (an editor's, a `cat` of two files) is read as the
    JSON list it is, not as jsonl whose first line `[` is not JSON; train reads it alike."""
    from redrafter_trt.train.data import read_conversations

    records = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]},
               {"conversations": [{"from": "human", "value": "Bye"}]}]
    path = tmp_path / "share.json"
    for lead in ("\n", "\n\n  ", " \t"):
        for body in (json.dumps(records, indent=2), json.dumps(records)):
            path.write_text(lead + body)
            assert load_prompts(path) == ["Hi", "Bye"], (lead, body[:10])
            assert [c.messages[0]["content"] for c in read_conversations(path)] == ["Hi", "Bye"]


def test_a_message_with_a_role_and_an_input_key_keeps_its_content(tmp_path):
    """A message with `from`/`value` or `role`/`content` is a turn whatever else it holds: an `input` key beside them
    (a tool's arguments, a dataset's extra column) does not make it a Capybara {"input", "output"} exchange, whose
    `input` would have been read as the prompt."""
    from redrafter_trt.train.data import read_conversations

    path = tmp_path / "p.jsonl"
    lines = [{"conversations": [{"role": "user", "content": "Q", "input": "not the prompt"},
                                {"role": "assistant", "content": "A", "output": "not the answer"}]},
             {"conversations": [{"from": "human", "value": "Q2", "input": "not the prompt"}]},
             {"conversation": [{"input": "Q3", "output": "A3"}]}]  # an exchange: no from/role
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert load_prompts(path) == ["Q", "Q2", "Q3"]
    first = read_conversations(path)[0].messages
    assert [(m["role"], m["content"]) for m in first] == [("user", "Q"), ("assistant", "A")]
