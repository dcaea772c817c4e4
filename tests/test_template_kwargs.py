"""Chat-template variables (Qwen3's `enable_thinking`): `--chat-template-kwargs JSON` reaches every render of run,
bench, acceptance and train (a preset's mapping too), and serve's `chat_template_kwargs` its request's render, on a
tiny Llama whose character tokenizer's template closes an empty <think> block in the generation prompt when
`enable_thinking` is false, as Qwen3's does; bad values are one line (exit 2) or a 400 naming the field."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from click.testing import CliRunner

from redrafter_trt.cli import main
from test_runtime_support import checkpoint, one_thread  # noqa: F401
from test_serve import call
from test_train_data import QWEN3_THINK, make_tokenizer
from tinymodels import make_drafter, make_hf

pytestmark = pytest.mark.usefixtures("one_thread")

GENERATION = "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
THINKING = QWEN3_THINK.replace(GENERATION, "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                               "{% if enable_thinking is defined and not enable_thinking %}"
                               "{{ '<think>\n\n</think>\n\n' }}{% endif %}{% endif %}")
EMPTY_THINK = "<think>\n\n</think>\n\n"
OFF = '{"enable_thinking": false}'
HI = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"  # the prompt "Hi", thinking


@pytest.fixture(scope="module")
def thinking(tmp_path_factory):
    """(checkpoint, base folder): a tiny Llama, its tokenizer's template Qwen3's thinking switch."""
    assert THINKING != QWEN3_THINK
    folder = tmp_path_factory.mktemp("thinking")
    base = make_hf(folder / "base", "llama", vocab_size=100)  # the character tokenizer's 99 tokens, padded
    tok = make_tokenizer(base)
    tok.chat_template = THINKING
    tok.save_pretrained(base)
    return checkpoint(base, make_drafter(folder / "drafter", base), 1, num_beams=2, draft_len=2), base


@pytest.fixture()
def rendered(monkeypatch):
    """The prompt texts run, bench and acceptance encoded (their encode_prompts, spied on)."""
    from redrafter_trt import tokens

    seen = []

    def spy(tokenizer, prompts, chat):
        ids = tokens.encode_prompts(tokenizer, prompts, chat)
        seen.extend(tokenizer.decode(p) for p in ids)
        return ids

    for module in ("redrafter_trt.cli.run_cmd", "redrafter_trt.bench", "redrafter_trt.replay"):
        monkeypatch.setattr(f"{module}.encode_prompts", spy)
    return seen


def _cli(*args, code: int = 0):
    r = CliRunner().invoke(main, [*map(str, args)])
    assert r.exit_code == code, (r.output, r.exception)
    return r


@pytest.fixture()
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "Hi"}\n')
    return path


COMMANDS = {  # each command's arguments on the fixture, less the checkpoint and tokenizer
    "run": lambda p: ["--input-file", p, "--chat", "--max-output-len", 2],
    "bench": lambda p: ["--prompts", p, "--max-new-tokens", 2, "--beams", 1, "--draft-lens", 1],
    "acceptance": lambda p: ["--prompts", p, "--max-new-tokens", 2, "--beams", 1, "--draft-lens", 1],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_run_bench_and_acceptance_render_their_prompts_with_the_kwargs(thinking, rendered, prompts, tmp_path,
                                                                       command):
    """Nothing passed Qwen3's enable_thinking (or any template variable) to the prompts of run, bench and
    acceptance: a drafter served with thinking off was measured on thinking prompts. The option's object is given
    to the template, and recorded in the output's producer block."""
    ckpt, base = thinking
    args = [command, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, *COMMANDS[command](prompts)]
    _cli(*args)
    _cli(*args, "--chat-template-kwargs", OFF, "--output-json", tmp_path / "out.json")
    assert rendered == [HI, HI + EMPTY_THINK]
    producer = json.loads((tmp_path / "out.json").read_text())["producer"]
    assert producer["options"]["chat_template_kwargs"] == {"enable_thinking": False}


def test_a_presets_mapping_sets_them(thinking, rendered, prompts, tmp_path):
    ckpt, base = thinking
    preset = tmp_path / "p.yaml"
    preset.write_text("run:\n  chat-template-kwargs: {enable_thinking: false}\n")
    _cli("run", "--config", preset, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, *COMMANDS["run"](prompts))
    assert rendered == [HI + EMPTY_THINK]
    preset.write_text("chat-template-kwargs: {1: true}\n")  # YAML's keys need not be text: a TypeError, the template blamed
    r = _cli("run", "--config", preset, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--input-text", "Hi",
             "--chat", code=2)
    assert "chat-template-kwargs" in r.output and "1 is not" in r.output and r.output.count("\n") == 1, r.output
    preset.write_text("chat-template-kwargs: [enable_thinking]\n")
    r = _cli("run", "--config", preset, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--input-text", "Hi",
             code=2)
    assert "'chat-template-kwargs'" in r.output and "mapping" in r.output and r.output.count("\n") == 1, r.output


def test_typed_kwargs_override_a_presets_key_by_key(thinking, rendered, prompts, tmp_path):
    """A review: a typed --chat-template-kwargs replaced the preset's mapping whole, so `run --config P
    --chat-template-kwargs '{"reasoning_effort": "low"}'` dropped the preset's enable_thinking false in silence and
    rendered thinking prompts. The typed keys override the preset's one by one, as a serve request's over serve's."""
    import shutil

    from transformers import AutoTokenizer

    ckpt, base = thinking
    tokenizer_dir = shutil.copytree(base, tmp_path / "base")  # a template reading a second variable, after thinking's
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = THINKING + "{% if effort is defined %}{{ effort }}{% endif %}"
    tok.save_pretrained(tokenizer_dir)
    preset = tmp_path / "p.yaml"
    preset.write_text("run:\n  chat-template-kwargs: {enable_thinking: false}\n")
    args = ["run", "--config", preset, "--checkpoint-dir", ckpt, "--tokenizer-dir", tokenizer_dir,
            *COMMANDS["run"](prompts)]
    _cli(*args, "--chat-template-kwargs", '{"effort": "low"}')
    _cli(*args, "--chat-template-kwargs", '{"enable_thinking": true, "effort": "low"}')
    assert rendered == [HI + EMPTY_THINK + "low", HI + "low"]


@pytest.mark.parametrize("typed", [[], ["--chat-template-kwargs", "{}"]])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_presets_kwargs_are_left_out_where_chat_is_off(thinking, rendered, prompts, tmp_path, command, typed):
    """A preset's shared chat-template-kwargs (for train and bench too) refused run --no-chat, the preset's chat: true
    turned off as documented, with 'leave it out' of an option nobody typed; as a preset's other options that do not
    apply, they are left out. Typed, they are refused (test_kwargs_without_the_chat_template_are_refused); a typed
    '{}' sets none, and the preset's, merged under it, were refused as typed."""
    ckpt, base = thinking
    preset = tmp_path / "p.yaml"
    preset.write_text("chat-template-kwargs: {enable_thinking: false}\nrun:\n  chat: true\n")
    args = [a for a in COMMANDS[command](prompts) if a != "--chat"]
    _cli(command, "--config", preset, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, *args, "--no-chat", *typed)
    assert rendered and not any("<|im_start|>" in text for text in rendered), rendered

@pytest.mark.parametrize("value, says", [
    ("{enable_thinking: false}", "is not JSON"),
    ("[1]", "not a JSON object"),
    ('{"tokenize": true}', '"tokenize" is an argument of apply_chat_template'),
    ('{"conversations": []}', '"conversations" is an argument of apply_chat_template'),
    ('{"messages": []}', '"messages" is an argument of apply_chat_template'),  # the template's, not a variable
    ('{"enable_thinking": "false"}', '"enable_thinking" is the string "false", which a template tests as no boolean'),
])
@pytest.mark.parametrize("command", ["run", "train", "serve"])
def test_bad_kwargs_are_one_line(thinking, prompts, tmp_path, command, value, says):
    ckpt, base = thinking
    taken = socket.socket()  # a port in use: serve exits where a value it should refuse went through, not serves on
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    args = {"run": ["--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--input-text", "Hi", "--chat"],
            "train": ["--base", base, "--data", prompts, "--output", tmp_path / "d", "--distill"],
            "serve": ["--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--port", taken.getsockname()[1]]}[command]
    with taken:
        r = _cli(command, *args, "--chat-template-kwargs", value, code=2)
    assert "--chat-template-kwargs" in r.output and says in r.output and r.output.count("\n") == 1, r.output


@pytest.mark.parametrize("value", [OFF, '{"enable_thinkng": false}'])
def test_kwargs_without_the_chat_template_are_refused(thinking, value):
    """run renders no template without --chat: the kwargs would change nothing. A README walk: a variable the
    template does not read (any on SmolLM2's, which reads none) was blamed on its name when --chat was missing."""
    ckpt, base = thinking
    r = _cli("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--input-text", "Hi", "--chat-template-kwargs",
             value, code=2)
    assert "--chat-template-kwargs" in r.output and "pass --chat" in r.output and r.output.count("\n") == 1, r.output


@pytest.mark.parametrize("command", ["run", "bench", "train", "serve"])
def test_a_variable_the_template_never_reads_is_refused(thinking, prompts, tmp_path, command):
    """A misspelt variable (`enable_thinkng`), or another model's name for it (DeepSeek-V3.1's `thinking`), rendered
    Qwen3's prompts thinking, without a word: a drafter trained, measured or served for thinking off met thinking
    prompts. A variable the base's template never reads is one line (exit 2) naming it and those it reads."""
    ckpt, base = thinking
    taken = socket.socket()  # serve refuses it before it binds its port (and loads the model): not served
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    args = {"run": ["--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--input-text", "Hi", "--chat"],
            "bench": ["--checkpoint-dir", ckpt, "--tokenizer-dir", base, *COMMANDS["bench"](prompts)],
            "train": ["--base", base, "--data", prompts, "--output", tmp_path / "d", "--distill"],
            "serve": ["--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--port", port]}[command]
    r = _cli(command, *args, "--chat-template-kwargs", '{"enable_thinking": false, "enable_thinkng": false}', code=2)
    assert r.output.count("\n") == 1, r.output
    assert ('--chat-template-kwargs sets "enable_thinkng", a variable the base\'s chat template never reads (it reads '
            'enable_thinking): check its name, or leave it out') in r.output, r.output
    taken.close()


@pytest.mark.parametrize("written", ["{enable_thinking: false, enable_thinkng: false}",
                                     """'{"enable_thinking": false, "enable_thinkng": false}'"""], ids=["yaml", "json"])
@pytest.mark.parametrize("command, section", [("run", False), ("bench", False), ("acceptance", False),
                                              ("serve", False), ("run", True)])
def test_a_presets_variable_the_template_never_reads_is_named_as_the_presets(thinking, prompts, tmp_path, command,
                                                                             section, written):
    """A review: a --config preset's misspelt variable was refused as `--chat-template-kwargs sets ...`, a flag
    nobody typed. It is named as the preset's field (top-level or the command's section, a YAML mapping or a JSON
    string); one typed over it (or typed alone) as the flag."""
    ckpt, base = thinking
    taken = socket.socket()  # serve refuses it before it binds its port (and loads the model): not served
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    args = {"run": ["--input-text", "Hi", "--chat"], "bench": COMMANDS["bench"](prompts),
            "acceptance": COMMANDS["acceptance"](prompts), "serve": ["--port", taken.getsockname()[1]]}[command]
    preset = tmp_path / "p.yaml"
    preset.write_text(f"{command}:\n  " * section + f"chat-template-kwargs: {written}\n")
    args = [command, "--config", preset, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, *args]
    said = ' sets "enable_thinkng", a variable the base\'s chat template never reads (it reads enable_thinking)'
    with taken:
        for typed, named in [([], "the --config preset's chat-template-kwargs"),
                             (["--chat-template-kwargs", '{"enable_thinkng": true}'], "--chat-template-kwargs")]:
            r = _cli(*args, *typed, code=2)
            assert r.output.count("\n") == 1 and f"error: {named}{said}" in r.output, r.output
        if command == "run" and not section:  # --debug's traceback ends in the same words
            r = CliRunner().invoke(main, ["--debug", *map(str, args)])
            assert str(r.exception).startswith(f"the --config preset's chat-template-kwargs{said}"), r.exception
        preset.write_text("chat-template-kwargs: {enable_thinking: false}\n")
        r = _cli(*args, "--chat-template-kwargs", '{"thinking": true}', code=2)
        assert 'error: --chat-template-kwargs sets "thinking"' in r.output, r.output


def test_an_unread_variables_error_pickles_as_it_was():
    """A tp rank sends its errors to the parent pickled: this one, made with more than its message, did not unpickle
    (`missing 1 required positional argument: 'reads'`)."""
    import pickle

    from redrafter_trt.tokens import UnreadTemplateVariable

    error = UnreadTemplateVariable("k", "a, b", "the --config preset's chat-template-kwargs")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is UnreadTemplateVariable and str(back) == str(error) and (back.key, back.reads) == ("k", "a, b")


def test_a_variable_the_template_defaults_is_read_and_a_loops_own_is_not_named():
    """A template that defaults its variable (`{% set enable_thinking = true %}` where it is not defined) reads it,
    and a name a loop sets after reading it (Qwen3's `content`, which jinja2 counts as undeclared) is not named
    among those the template reads."""
    from types import SimpleNamespace

    from redrafter_trt.tokens import unread_template_kwargs

    template = SimpleNamespace(chat_template=(
        "{% if enable_thinking is not defined %}{% set enable_thinking = true %}{% endif %}"
        "{% for m in messages %}{% if m.content is string %}{% set content = m.content %}{% endif %}{{ content }}"
        "{% endfor %}{{ enable_thinking }}"))
    assert unread_template_kwargs(template, {"enable_thinking": False}) is None
    assert "(it reads enable_thinking):" in str(unread_template_kwargs(template, {"thinking": False}))


def test_a_template_marking_its_answers_for_training_is_checked():
    """transformers' `{% generation %}` tag (a template marking the assistant's tokens, as training templates do)
    is no jinja2 tag: such a template was not checked, a misspelt variable rendered it in silence. It is read as
    transformers reads it, a call block: a variable set inside it is not the template's own."""
    from types import SimpleNamespace

    from redrafter_trt.tokens import unread_template_kwargs

    template = SimpleNamespace(chat_template=(
        "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{% set said = m.content %}{{ said }}"
        "{% endgeneration %}{% endif %}{% endfor %}{{ said }}{% if enable_thinking is defined %}{% endif %}"))
    assert unread_template_kwargs(template, {"enable_thinking": False, "said": 1}) is None
    assert "(it reads enable_thinking):" in str(unread_template_kwargs(template, {"enable_thinkng": False}))


def test_a_template_jinja2_cannot_compile_is_left_to_its_render(tmp_path):
    """A template naming a filter jinja2 lacks (one written for another renderer) compiles in neither jinja2 nor
    transformers: looking for the variables it reads raised jinja2's TemplateAssertionError out of every tokenizer
    load, a traceback where plain prompts (--no-chat) never render it. It is not checked, and loads."""
    from redrafter_trt.tokens import load_tokenizer

    tok = make_tokenizer(tmp_path)
    tok.chat_template = "{% for m in messages %}{{ m.content | fromjson }}{% endfor %}{{ enable_thinking }}"
    tok.save_pretrained(tmp_path)
    assert load_tokenizer(str(tmp_path), None).chat_template == tok.chat_template
    assert load_tokenizer(str(tmp_path), None, {"enable_thinkng": False}).chat_template == tok.chat_template


def _trained_with(thinking, tmp_path, kwargs: dict):
    """(checkpoint, base folder): the fixture's base with a drafter train made with these chat_template_kwargs."""
    from redrafter_trt.convert import convert

    _, base = thinking
    drafter = make_drafter(tmp_path / "drafter", base)
    cfg = json.loads((drafter / "config.json").read_text())
    cfg["producer"] = {"command": "train", "options": {"chat_template_kwargs": kwargs}}
    (drafter / "config.json").write_text(json.dumps(cfg))
    return convert(base, drafter, tmp_path / "ckpt", num_beams=2, draft_len=2), base


@pytest.mark.parametrize("command", COMMANDS)
def test_prompts_rendered_otherwise_than_the_drafters_are_warned_of(thinking, prompts, tmp_path, caplog, command):
    """A drafter trained with thinking off (train --chat-template-kwargs, in its producer block) and measured or run
    on thinking prompts drafts the wrong mode, without a word: convert records the drafter's variables in the
    checkpoint, and run, bench and acceptance warn where theirs differ, naming the option to pass."""
    ckpt, base = _trained_with(thinking, tmp_path, {"enable_thinking": False})
    args = [command, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, *COMMANDS[command](prompts)]
    with caplog.at_level("WARNING"):
        _cli(*args, "--chat-template-kwargs", OFF)
        assert "chat_template_kwargs" not in caplog.text
        _cli(*args)
    assert ('the checkpoint\'s drafter was trained on prompts rendered with chat_template_kwargs {"enable_thinking": '
            'false}, these with {}: it will likely accept fewer draft tokens; pass --chat-template-kwargs '
            '\'{"enable_thinking": false}\'') in caplog.text, caplog.text
    if command == "run":  # serve's chat requests without kwargs of their own take its --chat-template-kwargs
        taken = socket.socket()  # told before it binds its port (and loads the model): not served
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        serve = ["serve", "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--port", taken.getsockname()[1]]
        assert "drafter was trained" not in _cli(*serve, "--chat-template-kwargs", OFF, code=2).output
        r = _cli(*serve, code=2)
        taken.close()
        assert "warning: the checkpoint's drafter was trained on prompts rendered with chat_template_kwargs" in r.output


def test_variables_that_render_the_drafters_prompts_are_not_warned_of(thinking, prompts, tmp_path, caplog):
    """A drafter trained with the template's default made explicit (Qwen3's `enable_thinking` true) and run or
    served with none (the same prompts) was warned of as trained on others: the variables are compared by what the
    template renders with them, not as objects."""
    ckpt, base = _trained_with(thinking, tmp_path, {"enable_thinking": True})
    with caplog.at_level("WARNING"):
        _cli("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", base, *COMMANDS["run"](prompts))
        assert "drafter was trained" not in caplog.text
        _cli("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", base, *COMMANDS["run"](prompts),
             "--chat-template-kwargs", OFF)
        assert "drafter was trained" in caplog.text  # thinking off renders other prompts
    taken = socket.socket()  # told before it binds its port (and loads the model): not served
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    serve = ["serve", "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--port", taken.getsockname()[1]]
    assert "drafter was trained" not in _cli(*serve, code=2).output
    assert "drafter was trained" in _cli(*serve, "--chat-template-kwargs", OFF, code=2).output
    taken.close()


def test_train_distills_each_rendering_apart_and_records_it(thinking, prompts, tmp_path):
    """train --distill keys its cached answers by the prompts' token ids: the same prompts rendered with thinking off
    are answered apart (two answers cached per prompt), the drafter's producer block records the kwargs, and a
    resume with other kwargs (other examples) is refused."""
    from redrafter_trt.train.distill import read_cache

    _, base = thinking
    prompts.write_text('{"prompt": "Hi"}\n{"prompt": "Count to 3."}\n')
    train = ["train", "--base", base, "--data", prompts, "--cache-dir", tmp_path / "cache", "--distill",
             "--distill-max-new-tokens", 4, "--max-steps", 1, "--predict-n", 2, "--no-rnn", "--exit-dim", 16,
             "--base-dtype", "float32"]
    _cli(*train, "--output", tmp_path / "on")
    _cli(*train, "--output", tmp_path / "off", "--chat-template-kwargs", OFF)
    (folder,) = (tmp_path / "cache").glob("distill-*")
    assert len(read_cache(folder)) == 4
    options = json.loads((tmp_path / "off" / "config.json").read_text())["producer"]["options"]
    assert options["chat_template_kwargs"] == {"enable_thinking": False}
    r = _cli(*train, "--output", tmp_path / "on", "--resume", "--force", "--chat-template-kwargs", OFF, code=2)
    assert "--chat-template-kwargs ({} then, {'enable_thinking': False} now)" in r.output, r.output


def test_reference_answers_leave_the_empty_think_block_to_the_prompt_with_thinking_off(thinking):
    """Qwen3's template gives a reference answer an empty <think> block: trained as the answer's with thinking on
    (the base writes it), as the prompt's with thinking off (the template writes it)."""
    from redrafter_trt.train.base import load_tokenizer
    from redrafter_trt.train.data import conversation_of, encode

    _, base = thinking
    conv = conversation_of({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "R"}]})

    def answer(kwargs):
        tok = load_tokenizer(base, None, kwargs)
        ex = encode(tok, conv, 1000)
        return tok.decode([t for t, m in zip(ex.ids, ex.mask) if m])

    assert answer({}) == EMPTY_THINK + "R<|im_end|>"
    assert answer({"enable_thinking": False}) == "R<|im_end|>"


@pytest.fixture(scope="module")
def url(thinking):
    from redrafter_trt.serve_app import App
    from redrafter_trt.serve_backend import ReferenceBackend
    from redrafter_trt.serve_http import make_server

    backend = ReferenceBackend(*thinking)
    server = make_server(App(backend, "tiny", max_output_len=8), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    backend.stop()


def test_serve_renders_a_chat_request_with_its_kwargs(url, thinking):
    """serve refused "chat_template_kwargs" (vLLM's and trtllm-serve's field, which clients send to turn Qwen3's
    thinking off): the request's object is given to the template for that request alone."""
    def prompt_tokens(**fields):
        status, out = call(url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                         "max_tokens": 1, **fields})
        assert status == 200, out
        return out["usage"]["prompt_tokens"]

    thinking_on = prompt_tokens()
    assert prompt_tokens(chat_template_kwargs={"enable_thinking": False}) == thinking_on + len(EMPTY_THINK)
    assert prompt_tokens(chat_template_kwargs={}) == prompt_tokens(chat_template_kwargs=None) == thinking_on


@pytest.mark.parametrize("path, kwargs, says", [
    ("/v1/chat/completions", [1], '"chat_template_kwargs" must be an object'),
    ("/v1/chat/completions", "enable_thinking=false", '"chat_template_kwargs" must be an object'),
    ("/v1/chat/completions", {"tokenize": True}, '"tokenize" is an argument of apply_chat_template'),
    ("/v1/chat/completions", {"add_generation_prompt": False}, '"add_generation_prompt" is an argument'),
    ("/v1/chat/completions", {"conversations": []}, '"conversations" is an argument'),
    ("/v1/chat/completions", {"enable_thinking": " False"}, 'write false without quotes'),  # rendered thinking
    ("/v1/completions", {"enable_thinking": False}, '"chat_template_kwargs" is not a field of completions'),
])
def test_serve_refuses_kwargs_it_cannot_render_with(url, path, kwargs, says):
    body = {"messages": [{"role": "user", "content": "Hi"}]} if "chat" in path else {"prompt": "Hi"}
    status, out = call(url, path, {**body, "max_tokens": 1, "chat_template_kwargs": kwargs})
    assert status == 400 and says in out["error"]["message"], out
    assert "\n" not in out["error"]["message"]
    if "chat" in path:
        assert out["error"]["param"] == "chat_template_kwargs"


def test_serves_a_presets_kwargs_as_the_defaults_of_chat_requests(thinking, tmp_path):
    """serve had no --chat-template-kwargs, so a preset's top-level chat-template-kwargs (thinking off for run, bench
    and train) was dropped in silence by serve: it served thinking prompts unless every client sent the field. They
    are the defaults of its chat requests now (said at startup), a request's own keys overriding them key by key, as
    vLLM's --default-chat-template-kwargs."""
    import re
    import signal
    import subprocess
    import sys

    ckpt, base = thinking
    preset = tmp_path / "p.yaml"
    preset.write_text("chat-template-kwargs: {enable_thinking: false}\n")
    proc = subprocess.Popen([sys.executable, "-m", "redrafter_trt", "serve", "--config", str(preset), "--checkpoint-dir",
                             str(ckpt), "--tokenizer-dir", str(base), "--port", "0", "--max-output-len", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        address = re.search(r"(http://[\d.:]+)/v1", line)
        assert address and 'chat_template_kwargs {"enable_thinking": false}' in line, (
            line, proc.stderr.read() if proc.poll() is not None else "")

        def prompt_tokens(**fields):
            status, out = call(address.group(1), "/v1/chat/completions",
                               {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, **fields})
            assert status == 200, out
            return out["usage"]["prompt_tokens"]

        thinking_on = prompt_tokens(chat_template_kwargs={"enable_thinking": True})
        assert prompt_tokens() == prompt_tokens(chat_template_kwargs={"unused": 1}) == thinking_on + len(EMPTY_THINK)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)


def test_serve_refuses_them_with_an_engine(smollm2, tmp_path):
    """trtllm-serve 1.2 has no server-wide chat template variables (no flag; its clients send chat_template_kwargs
    with each request): serve --engine-dir would serve thinking prompts where the option, typed or a preset's, said
    otherwise."""
    from test_serve_engine import make_engine

    engine = make_engine(tmp_path / "engine", tp=1)
    args = ["serve", "--engine-dir", engine, "--tokenizer-dir", smollm2, "--port", 9000, "--dry-run"]
    r = _cli(*args, "--chat-template-kwargs", OFF, code=2)
    assert "--chat-template-kwargs applies to --checkpoint-dir only" in r.output and r.output.count("\n") == 1, r.output
    preset = tmp_path / "p.yaml"
    preset.write_text("chat-template-kwargs: {enable_thinking: false}\n")
    r = _cli(*args, "--config", preset, code=2)
    assert "preset sets chat-template-kwargs" in r.output and r.output.count("\n") == 1, r.output
    # typed '{}' sets nothing over the preset's (typed keys override a preset's one by one): the preset is named
    r = _cli(*args, "--config", preset, "--chat-template-kwargs", "{}", code=2)
    assert "preset sets chat-template-kwargs" in r.output and r.output.count("\n") == 1, r.output
    preset.write_text("chat-template-kwargs: {}\n")  # asks nothing
    assert _cli(*args, "--config", preset).output.startswith("trtllm-serve ")


def test_evaluate_on_prompts_renders_them_as_the_drafter_was_trained(thinking, prompts, tmp_path, monkeypatch):
    """scripts/eval_drafter.py and train_smollm2.py (heldout.evaluate_on_prompts) loaded the tokenizer without the
    kwargs: a drafter trained with thinking off was scored on thinking prompts. The drafter's recorded ones
    (its producer block's options) are the default; a chat_template_kwargs given wins."""
    from redrafter_trt.train import heldout

    _, base = thinking
    drafter = make_drafter(tmp_path / "d", base)
    config = json.loads((drafter / "config.json").read_text())
    config["producer"] = {"command": "train", "options": {"chat_template_kwargs": {"enable_thinking": False}}}
    (drafter / "config.json").write_text(json.dumps(config))
    seen = []

    def spy(load, tokenizer, ids, *a, **k):
        seen.extend(tokenizer.decode(p) for p in ids)
        raise KeyboardInterrupt  # what was distilled is all this test reads

    monkeypatch.setattr(heldout, "distill", spy)
    for kwargs in (None, {}):
        with pytest.raises(KeyboardInterrupt):
            heldout.evaluate_on_prompts(drafter, base, prompts, tmp_path / "cache", k=2, chat_template_kwargs=kwargs)
    assert seen == [HI + EMPTY_THINK, HI]
