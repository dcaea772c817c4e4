"""Prompts to token ids and the stop tokens, one way for every command (run, bench, train, quickstart)."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path

from .errors import (COUNT, ConfigError, DependencyError, TokenizerError, UnreadableJSON, dangling_link, first_line,
                     json_loads, read_text)

log = logging.getLogger(__name__)


KWARGS_WITHOUT_TEMPLATE = ("--chat-template-kwargs sets variables of the chat template, which these prompts are not "
                           "rendered in: pass --chat (and a tokenizer with a chat template), or leave it out")


def encode_prompts(tokenizer, prompts: list[str], chat: bool | None) -> list[list[int]]:
    """Token ids per prompt. chat=True: in the tokenizer's chat template, ready for the answer (`chat_text`: a prompt
    file's `Prompt` as train renders its record); None: chat when the tokenizer has a template; False: plain text (the
    prompt's text alone, as TensorRT-LLM's run.py takes it). Template variables without the template are refused."""
    chat = uses_chat(tokenizer, chat)
    if not chat and template_kwargs(tokenizer):  # they would change nothing
        raise ConfigError(KWARGS_WITHOUT_TEMPLATE)
    out = []
    for p in prompts:
        if chat:
            text = chat_text(tokenizer, p)
            out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
        else:
            out.append(list(tokenizer(str(p))["input_ids"]))
    return out


def drafter_mode_warning(ckpt_config: dict, tokenizer, chat: bool | None) -> str | None:
    """Why the prompts `encode_prompts(tokenizer, ..., chat)` renders suit the checkpoint's drafter less, or None:
    rendered in the chat template with other variables than its drafter was trained with (`template_kwargs_warning`:
    Qwen3's thinking on where it was trained off, or the reverse); plain prompts are not told."""
    from .producer import template_kwargs_warning

    if not uses_chat(tokenizer, chat):
        return None
    return template_kwargs_warning(ckpt_config, template_kwargs(tokenizer), lambda a, b: renders_alike(tokenizer, a, b))


def renders_alike(tokenizer, a: dict, b: dict) -> bool:
    """Whether the chat template renders the same with variables `a` as with `b` (Qwen3's {} and its default made
    explicit, {"enable_thinking": true}): a question ready for its answer, one answered, and one given a tool (Llama
    3.1's `tools_in_user_message` changes that one alone); False where it cannot render them."""
    user = {"role": "user", "content": "Hi"}
    probes = (([user], True, ()), ([user, {"role": "assistant", "content": "Hello"}], False, ()),
              ([user], True, (PROBE_TOOL,)))
    try:
        return all(render_chat(tokenizer, turns, ask, tools, a) == render_chat(tokenizer, turns, ask, tools, b)
                   for turns, ask, tools in probes)
    except template_errors():  # jinja's errors; a template that is not text
        return False


def uses_chat(tokenizer, chat: bool | None) -> bool:
    """Whether prompts go through the chat template: `chat` when given (True needs a template), else whether the
    tokenizer has one."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has_template:
        raise ConfigError("a chat template was asked for (--chat) but this tokenizer has none: leave out --chat")
    return has_template if chat is None else bool(chat)


# The date a chat template that dates its system prompt is given (Llama-3.2's prints strftime_now's today unless given
# `date_string`; Llama-3.1's own default is this one) by train, run, bench, acceptance and the scripts: one prompt text
# on every day. With today's, the distilled-answer and hidden-state caches (keyed by token ids) missed after midnight,
# run and bench rendered other tokens than train had, and bench's numbers depended on the day. serve renders today's,
# as transformers, vLLM and trtllm-serve do for a live client (the date is prompt, never drafted).
DATE_STRING = "26 Jul 2024"
_RENDER_DAY: ContextVar[datetime | None] = ContextVar("render_day", default=None)  # set inside render_chat only


def template_errors() -> tuple[type[Exception], ...]:
    """What a chat template's render (`render_chat`, `apply_template`) raises when it refuses: jinja's TemplateError
    (a Python error the template's own code raised among them, `apply_template`); TypeError and ValueError for a
    template that is not text, or none."""
    from jinja2 import TemplateError

    return TemplateError, TypeError, ValueError


def raised_by_template(e: BaseException) -> bool:
    """Whether `e` came from rendering a chat template: jinja's own errors (the template's raise_exception, an
    undefined value used), or a Python error raised by the template's code on the messages (`'a' + 1`, a division by
    zero, endless recursion, a range jinja's sandbox refuses), whose traceback runs through the compiled template
    (jinja names its frames `<template>`). An error raised before or after rendering is not the template's."""
    from jinja2 import TemplateError

    if isinstance(e, TemplateError):
        return True
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            return True
        tb = tb.tb_next
    return False


def apply_template(tokenizer, messages: list[dict], **kwargs) -> str:
    """The tokenizer's chat template's text of `messages` (apply_chat_template, tokenize=False, with `kwargs`), the one
    render serve and `render_chat` share. Any Python error the template's own code raises (`raised_by_template`: a
    ZeroDivisionError, RecursionError, the sandbox's OverflowError) is raised as jinja's TemplateRuntimeError naming
    it ("ZeroDivisionError: division by zero"), the template's refusal as jinja's own are: one was a traceback in
    run, bench, acceptance and train (a review). Errors before or after rendering are raised as they are."""
    from jinja2 import TemplateError, TemplateRuntimeError

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except TemplateError:
        raise
    except Exception as e:
        if not raised_by_template(e):
            raise
        raise TemplateRuntimeError(f"{type(e).__name__}: {first_line(e, 'no message')}") from e


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool, tools: tuple[dict, ...] = (),
                kwargs: dict | None = None) -> str:
    """The tokenizer's chat template's text of `messages`, given `tools` (a record's tool definitions, `tools_of`: a
    template that shows none renders them not) and the command's template variables (`template_kwargs`; `kwargs`
    instead where given), dated DATE_STRING (as `date_string` unless those set it, and as the day a template's own
    `strftime_now(...)` reads): the one way every command but serve renders it. Raises the template's own errors
    (`template_errors`)."""
    _date_template_clock()
    token = _RENDER_DAY.set(datetime.strptime(DATE_STRING, "%d %b %Y"))
    try:
        return apply_template(tokenizer, messages, tools=list(tools) or None,
                              add_generation_prompt=add_generation_prompt,
                              **{"date_string": DATE_STRING,
                                 **(template_kwargs(tokenizer) if kwargs is None else kwargs)})
    finally:
        _RENDER_DAY.reset(token)


# The attribute of a command's tokenizer holding the variables its chat template renders with (auto_tokenizer's
# template_kwargs: --chat-template-kwargs), read by every render_chat: a command loads its tokenizer once
TEMPLATE_KWARGS = "redrafter_template_kwargs"


def template_kwargs(tokenizer) -> dict:
    """The variables `tokenizer`'s chat template renders with in this command ({} unless given)."""
    return getattr(tokenizer, TEMPLATE_KWARGS, None) or {}


def template_kwargs_refusal(kwargs: dict) -> str | None:
    """Why `kwargs` (--chat-template-kwargs, serve's "chat_template_kwargs") cannot be given to a chat template, or
    None: a key naming one of apply_chat_template's own arguments (`tokenize` returns ids for text,
    `add_generation_prompt`, `chat_template` or `tools` undo what the command or the request decided), or of the
    renderer it hands its keyword arguments to (transformers' render_jinja_template: `conversations` was a TypeError
    there, a server error or the template blamed), or the messages, which the template takes beside the variables,
    would change what is rendered or break it, not set a variable; or a value that is the string "true" or "false",
    which a template tests as no boolean (`enable_thinking: "false"` rendered Qwen3's prompts thinking)."""
    if not kwargs:
        return None
    import inspect

    from .hf_state import TRANSFORMERS_LOCK

    with TRANSFORMERS_LOCK:
        from transformers import PreTrainedTokenizerBase

        own = [*inspect.signature(PreTrainedTokenizerBase.apply_chat_template).parameters.values()]
        try:  # a transformers that renders in a function of its own (5.x, late 4.x)
            from transformers.utils.chat_template_utils import render_jinja_template
            own += inspect.signature(render_jinja_template).parameters.values()
        except ImportError:
            pass
    taken = {p.name for p in own if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"} | {"messages"}
    key = next((k for k in kwargs if k in taken), None)
    if key is not None:
        return f'"{key}" is an argument of apply_chat_template, not a variable of the chat template: leave it out'
    key = next((k for k, v in kwargs.items() if isinstance(v, str) and v.strip().lower() in ("true", "false")), None)
    return None if key is None else (f'"{key}" is the string {json.dumps(kwargs[key])}, which a template tests as '
                                     f"no boolean (Qwen3's `enable_thinking is false` is not so for it, and thinks): "
                                     f"write {kwargs[key].strip().lower()} without quotes")


# what every chat template is given or may call (`apply_chat_template`'s arguments, transformers' globals): not named
# among the variables a template reads (`unread_template_kwargs`)
GIVEN = {"messages", "tools", "documents", "add_generation_prompt", "raise_exception", "strftime_now", "date_string"}


def template_variables(tokenizer) -> tuple[set[str], set[str]] | None:
    """(the names the tokenizer's chat templates read before setting them: jinja2's undeclared variables, of every
    named template; those of them a loop sets, as Qwen3's `content`, each message's), or None: no template, or one
    jinja2 does not parse or compile (a filter or test it lacks: its render says so); transformers' `{% generation %}`
    read as transformers reads it (`_generation_tag`). A name set outside a loop after it is read (`{% if
    enable_thinking is not defined %}{% set enable_thinking = true %}`) is a variable: the first set only."""
    from jinja2 import Environment, TemplateSyntaxError, meta, nodes

    templates = getattr(tokenizer, "chat_template", None)
    templates = list(templates.values()) if isinstance(templates, dict) else [templates]
    if not all(isinstance(t, str) and t for t in templates):
        return None
    env = Environment(extensions=["jinja2.ext.loopcontrols", _generation_tag()])
    try:  # a TemplateAssertionError (a filter it lacks) is raised by find_undeclared_variables, which compiles
        parsed = [env.parse(t) for t in templates]
        read = set().union(*map(meta.find_undeclared_variables, parsed))
    except TemplateSyntaxError:
        return None
    looped = {n.name for tree in parsed for loop in tree.find_all(nodes.For) for n in loop.find_all(nodes.Name)
              if n.ctx == "store"}
    return read, read & looped


def _generation_tag():
    """transformers' `{% generation %}...{% endgeneration %}` (its AssistantTracker, marking the assistant's tokens),
    parsed as it parses it: a call block of its body, whose `{% set %}` stays inside."""
    from jinja2 import nodes
    from jinja2.ext import Extension

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

    return Generation


class UnreadTemplateVariable(ConfigError):
    """A chat template variable (`key`) given to a template that never reads it (`reads`: the variables it does);
    `named`: how the refusal names the setting, --chat-template-kwargs unless the command line knows a --config
    preset's field set it (`cli._name_preset_variable`)."""

    def __init__(self, key: str, reads: str, named: str = "--chat-template-kwargs"):
        super().__init__(f'{named} sets "{key}", a variable the base\'s chat template never reads (it reads '
                         f'{reads}): check its name, or leave it out')
        self.key, self.reads, self.named = key, reads, named

    def __reduce__(self):  # pickled as it was made (a tp rank sends its errors to the parent so)
        return type(self), (self.key, self.reads, self.named)


def unread_template_kwargs(tokenizer, kwargs: dict) -> UnreadTemplateVariable | None:
    """Why --chat-template-kwargs `kwargs` would change nothing, or None: a variable the chat template never reads
    (a misspelt `enable_thinkng`, another model's `thinking`) rendered Qwen3's prompts thinking without a word. A
    template jinja2 cannot read alone is not checked, nor one given none (plain prompts never render it)."""
    if not kwargs:
        return None
    names = template_variables(tokenizer)
    unread = [k for k in kwargs if names is not None and k not in names[0]]
    if not unread:
        return None
    read, looped = names
    own = sorted(read - looped - GIVEN - {k for k in read if k.endswith("_token")})
    return UnreadTemplateVariable(unread[0], ", ".join(own) or "none of its own")


# a tool definition the probes of a template render (`shows_tools`, `renders_alike`)
PROBE_TOOL = {"type": "function", "function": {"name": "f", "description": "", "parameters": {"type": "object",
                                                                                             "properties": {}}}}


def shows_tools(tokenizer) -> bool:
    """Whether the tokenizer's chat template renders the tool definitions it is given (Qwen2.5's and Llama-3.1's do,
    SmolLM2's not): one that does not render a user turn is said to, its error left to the render that needs it."""
    turn = [{"role": "user", "content": "Hi"}]
    try:
        return render_chat(tokenizer, turn, True, (PROBE_TOOL,)) != render_chat(tokenizer, turn, True)
    except template_errors():  # jinja's errors; a template that is not text, or none
        return True


PROBE_CALL = "redrafter_probe_call"  # the sample assistant's tool call's name (`sample_tool_call`)


def sample_tool_call(tokenizer) -> str | None:
    """The tokenizer's chat template's text of a user turn and an assistant turn calling PROBE_CALL (content "", no
    arguments); None where the template refuses it (its error)."""
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": PROBE_CALL, "arguments": {}}}]}]
    try:
        return render_chat(tokenizer, turns, False)
    except template_errors():  # jinja's errors; a template that is not text, or none
        return None


def writes_tool_calls(tokenizer) -> bool:
    """Whether the tokenizer's chat template writes an assistant turn's `tool_calls` (Qwen2.5's and Qwen3's do, in
    `<tool_call>` blocks; SmolLM2's writes the turn's empty content alone): the call's name is in its text
    (`sample_tool_call`). One that does not render a user turn is said to, its error left to the render that needs
    it."""
    if (text := sample_tool_call(tokenizer)) is not None:
        return PROBE_CALL in text
    try:
        render_chat(tokenizer, [{"role": "user", "content": "Hi"}], True)
    except template_errors():  # no template, or a broken one
        return True
    return False


def _date_template_clock() -> None:
    """Make the clock behind transformers' `strftime_now` (its chat-template module's `datetime.now`) read
    _RENDER_DAY where it is set (this thread, inside render_chat), and the real time everywhere else (serve's renders).
    A `strftime_now` passed to apply_chat_template would not do: transformers 5 turns a callable among its keyword
    arguments into the text '<function>' before the template sees it."""
    from .hf_state import TRANSFORMERS_LOCK

    with TRANSFORMERS_LOCK:
        from transformers.utils import chat_template_utils as module

    real = getattr(module, "datetime", None)
    if not isinstance(real, type) or getattr(real, "dated_by_render_chat", False):
        return  # set already, or a transformers whose strftime_now reads another clock: templates get today there

    class Clock(real):
        dated_by_render_chat = True

        @classmethod
        def now(cls, tz=None):
            day = _RENDER_DAY.get()
            return real.now(tz) if day is None else day

    module.datetime = Clock


def template_text(tokenizer, messages: list[dict], add_generation_prompt: bool, tools: tuple[dict, ...] = ()
                  ) -> tuple[list[dict], str]:
    """(messages, `render_chat`'s text of them): `messages` as they are, or with consecutive turns of one role joined
    (`join_roles`) when the template refuses them as they are (Llama-2's and Mistral's want alternating roles); the
    template's error when it refuses both, and `join_roles`' where only their weights keep them from being joined (the
    template's own first: the weights were blamed for a record, or a template, it refuses anyway). train and a prompt
    file's prompts both render through it."""
    try:
        return messages, render_chat(tokenizer, messages, add_generation_prompt, tools)
    except template_errors():
        try:
            joined = join_roles(messages)
        except ValueError:  # assistant turns of weight 0 and 1: raised unless the template refuses them joined anyway
            unweighted = [{k: v for k, v in m.items() if k != "weight"} for m in messages]
            render_chat(tokenizer, join_roles(unweighted), add_generation_prompt, tools)
            raise
        if joined == messages:
            raise
    return joined, render_chat(tokenizer, joined, add_generation_prompt, tools)


def join_roles(messages: list[dict]) -> list[dict]:
    """Consecutive turns of one role joined into one, their texts separated by a blank line (a null or empty content
    adds none): assistant turns all of `"weight": 0` (not trained) into one of weight 0; a ValueError for assistant
    turns of weight 0 and 1, which one turn cannot be (once joined into a trained one). Assistant turns keep their
    `tool_calls`, in order, and turns of one speaker its `name`; tool results, each answering its own call
    (`tool_call_id`), are never joined."""
    out: list[dict] = []
    for m in messages:
        if out and out[-1]["role"] == m["role"] != "tool":
            untrained = {t.get("weight") == 0 for t in (out[-1], m)} if m["role"] == "assistant" else {False}
            if len(untrained) > 1:
                raise ValueError("consecutive assistant turns of weight 0 and 1, which it takes only joined into one")
            calls = [*(out[-1].get("tool_calls") or []), *(m.get("tool_calls") or [])]
            texts = [t.get("content") or "" for t in (out[-1], m)]
            name = {"name": m["name"]} if "name" in m and out[-1].get("name") == m["name"] else {}
            out[-1] = {"role": m["role"], "content": "\n\n".join(t for t in texts if t), **name,
                       **({"tool_calls": calls} if calls else {}), **({"weight": 0} if untrained == {True} else {})}
        else:
            out.append(dict(m))
    return out


def chat_text(tokenizer, prompt: str) -> str:
    """A prompt in the tokenizer's chat template, ready for the answer: a `Prompt`'s messages (its record's system
    messages and user turns before the first answer, as train renders them, given its tools), else one user turn; a
    template that does not render (not text, broken Jinja) is a ConfigError, not a traceback, and so is one that
    refuses a system message (Gemma's: 'System role not supported') or the prompt's tools (once blamed on the template
    or the system message, which render without them)."""
    from .prompts import Prompt

    prompt = prompt if isinstance(prompt, Prompt) else Prompt(prompt)
    messages = prompt.messages()
    try:
        return template_text(tokenizer, messages, add_generation_prompt=True, tools=prompt.tools)[1]
    except template_errors() as e:  # jinja's errors; a template that is not text
        why = first_line(e, type(e).__name__)
        if prompt.tools:
            chat_text(tokenizer, Prompt(prompt, prompt.turns))  # the same prompt without them: its own error, if any
            raise ConfigError(f"the tokenizer's chat template refuses the tools of the prompt {_short(prompt)} "
                              f"({why}): write each as OpenAI's `tools` lists one, {{\"type\": \"function\", "
                              f"\"function\": {{\"name\": ..., \"parameters\": ...}}}}, or remove `tools` from its "
                              f"record") from None
        if any(m["role"] == "system" for m in messages):
            chat_text(tokenizer, str(prompt))  # the template itself, when it renders no user turn either
            raise ConfigError(f"the tokenizer's chat template refuses the system message of the prompt "
                              f"{_short(prompt)} ({why}): remove the system prompt from its record, or turn chat "
                              f"off") from None
        raise ConfigError(f"the tokenizer's chat template does not render ({why}): fix "
                          f"or re-download its tokenizer_config.json (chat_template), or turn chat off") from None


def _short(text: str, most: int = 40) -> str:
    return repr(text if len(text) <= most else text[:most] + "...")


def eos_ids(tokenizer, generation_eos=None) -> list[int]:
    """The tokenizer's EOS plus the generation config's `eos_token_id` (an id, a list or None)."""
    ids = {tokenizer.eos_token_id}
    ids |= set(generation_eos if isinstance(generation_eos, list) else [generation_eos])
    return sorted(i for i in ids if i is not None)


def stop_file(tokenizer_dir) -> Path | None:
    """The file whose `eos_token_id` `stop_ids` reads: generation_config.json, else config.json (None: neither)."""
    return next((path for name in ("generation_config.json", "config.json")
                 if (path := Path(tokenizer_dir) / name).is_file()), None)


def stop_ids(tokenizer, tokenizer_dir) -> list[int]:
    """`eos_ids` with the generation config saved next to the tokenizer, when there is one, else with the model's
    config.json there, whose `eos_token_id` transformers' `generate` then stops at (GenerationConfig's
    from_model_config; Llama 3.1 lists three there: run went on past two of them); checked: a broken one is one line
    naming it; an id past the tokenizer's tokens (one no answer can end on; `generate` refuses ids outside the
    vocabulary) is left out with a warning."""
    gen = stop_file(tokenizer_dir)
    if gen is None:
        return eos_ids(tokenizer)
    fix = f"fix it or re-download the model's {gen.name}"
    try:
        raw = json_loads(read_text(gen, fix))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{gen} is not valid JSON ({e.msg}, line {e.lineno}): {fix}") from None
    if not isinstance(raw, dict):  # `[]` was told "eos_token_id is None", a key it never held
        kind = {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(raw), "number")
        raise ConfigError(f"{gen} holds a JSON {kind}, not an object: {fix}")
    eos = raw.get("eos_token_id")
    listed = eos if isinstance(eos, list) else [eos]
    is_id = COUNT[1]  # the same check as the configs' counts
    if not all(i is None or is_id(i) for i in listed):
        raise ConfigError(f"{gen}: eos_token_id is {eos!r}, not a token id or a list of them: {fix}")
    ids = eos_ids(tokenizer, eos)
    if past := [i for i in ids if i >= len(tokenizer)]:  # a fine-tune's added token, the embeddings not resized
        log.warning("%s lists eos_token_id %s, past the tokenizer's %d tokens: no answer can end on %s, left out",
                    gen, ", ".join(map(str, past)), len(tokenizer), "it" if len(past) == 1 else "them")
    return [i for i in ids if i < len(tokenizer)]


# one of them in any Llama, Mistral or Qwen2 tokenizer folder (fast, SentencePiece, byte-level BPE, and Mistral's own
# formats, which transformers reads with no tokenizer.json: tekken.json, and tokenizer.model.v3 through mistral-common)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "tekken.json",
                   "tokenizer.model.v*")


def auto_tokenizer(folder, template_kwargs: dict | None = None):
    """AutoTokenizer.from_pretrained(folder), the one way every command loads a tokenizer, its chat template rendered
    with `template_kwargs` (`render_chat`; checked by the caller: `template_kwargs_refusal`): one it cannot load is a
    TokenizerError with transformers' reason (callers add what to do). A folder saved by transformers 5 names
    `TokenizersBackend`, a class transformers 4 lacks: there it loads as the fast tokenizer it is. A folder holding
    none of TOKENIZER_FILES (a checkpoint, a drafter or an empty folder passed in the base's place) is refused before
    transformers reads it: it printed a warning of its own above the error (a drafter's config.json: 'You are using
    a model of type `recurrent_drafting_drafter`...') and its reason named nothing ("... from one of: "). A
    SentencePiece tokenizer.model alone, with sentencepiece or protobuf missing, is a DependencyError naming them; with
    them, it is read as TensorRT-LLM reads it, as is every tokenizer.json and its BOS / EOS (`token_reading`)."""
    # a name without a wildcard as it is: glob (3.11) leaves out a link to nothing
    files = [path for name in TOKENIZER_FILES for path in (Path(folder).glob(name) if "*" in name else
                                                           [Path(folder) / name])]
    if not any(path.is_file() for path in files):  # a link to nothing named only then: transformers skips one
        raise TokenizerError(next(filter(None, map(dangling_link, files)), None) or
                             f"it holds none of {', '.join(TOKENIZER_FILES)}")
    from .token_deps import sentencepiece_refusal
    from .token_reading import class_post_processor, file_pipeline, sentencepiece_reading

    if why := sentencepiece_refusal(folder):  # before transformers logs its paragraph and blames tiktoken
        raise DependencyError(why)
    from .hf_state import TRANSFORMERS_LOCK

    with TRANSFORMERS_LOCK:
        import transformers

        load = transformers.AutoTokenizer
        if not hasattr(transformers, "TokenizersBackend") and _tokenizer_class(folder) == "TokenizersBackend":
            load = transformers.PreTrainedTokenizerFast
    try:
        tokenizer = load.from_pretrained(folder, **sentencepiece_reading(folder))
        file_pipeline(tokenizer, folder)
        class_post_processor(tokenizer, folder)
        tokenizer("ReDrafter")  # now, before any weights load: a model_max_length written as text fails every encoding
    except Exception as e:  # noqa: BLE001 - whatever transformers or tokenizers raise reading the user's files: an
        # OSError or ValueError for missing files, an ImportError (transformers 4 falling back to SentencePiece), a
        # TypeError / AttributeError / KeyError for files of the wrong shape, tokenizers' bare Exception for a
        # tokenizer.json it cannot parse
        # a KeyError's reason is the key alone: `('name')`; json's for a number too long names
        # sys.set_int_max_str_digits
        if problem := _unreadable_config(folder) or _template_list_problem(folder):
            raise ConfigError(problem) from None
        from .hf_model import transformers_config_refusal

        if problem := transformers_config_refusal(folder, e):  # AutoTokenizer reads config.json: that, not a tokenizer
            raise ConfigError(problem) from None
        raise TokenizerError(first_line(e, type(e).__name__)) from None
    if unread := unread_template_kwargs(tokenizer, template_kwargs or {}):
        raise unread
    setattr(tokenizer, TEMPLATE_KWARGS, dict(template_kwargs or {}))
    return tokenizer


def _tokenizer_config(folder) -> dict:
    """The folder's tokenizer_config.json ({}: none that reads as an object; AutoTokenizer says why)."""
    try:
        raw = json_loads((Path(folder) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _tokenizer_class(folder) -> str | None:
    """The `tokenizer_class` of the folder's tokenizer_config.json (None: none that reads; AutoTokenizer says why)."""
    return _tokenizer_config(folder).get("tokenizer_class")


def _unreadable_config(folder) -> str | None:
    """Why the folder's tokenizer_config.json is JSON Python's json cannot read (`UnreadableJSON`), or None."""
    path = Path(folder) / "tokenizer_config.json"
    try:
        json_loads(path.read_text(encoding="utf-8"))
    except UnreadableJSON as e:
        return f"{path} is not valid JSON ({e.msg}, line {e.lineno}): fix it or re-download the model's {path.name}"
    except (OSError, ValueError):
        pass
    return None


def _template_list_problem(folder) -> str | None:
    """What is wrong with a chat_template given as a list (transformers reads it as named templates, {"name": ...,
    "template": ...} each, with a KeyError or TypeError for an entry otherwise), or None."""
    entries = _tokenizer_config(folder).get("chat_template")
    if not isinstance(entries, list):
        return None
    for i, entry in enumerate(entries):
        lacking = "that is not an object" if not isinstance(entry, dict) else next(
            (f'without "{key}"' for key in ("name", "template") if key not in entry), None)
        if lacking:
            return (f"the chat_template list of {Path(folder) / 'tokenizer_config.json'} has an entry {lacking} "
                    f"(entry {i + 1} of {len(entries)}): each is {{\"name\": ..., \"template\": ...}}, "
                    f"\"default\" used unless there are tools (\"tool_use\"); complete it, or make chat_template "
                    f"the template's text")
    return None


def refuse_added_specials(tok, folder, vocab_size: int) -> None:
    """A ConfigError naming a special token (eos_token, pad_token, ...) that the vocabulary lacks, which transformers
    added as a new token when it loaded the tokenizer: the model has no row for it, or only a padding row (Qwen2's
    151936 rows for 151665 tokens) that it was never trained to emit or read (said before the vocabulary sizes, which
    name no token). A pad_token on a padding row passes: it only fills masked positions. Told from what the folder's tokenizer files define (`_defined_tokens`); without a tokenizer.json, by an id
    past vocab_size."""
    defined = _defined_tokens(folder)
    for key, value in tok.special_tokens_map.items():
        for token in value if isinstance(value, (list, tuple)) else [value]:
            i = tok.convert_tokens_to_ids(str(token))
            if not isinstance(i, int) or (i < vocab_size if defined is None else defined(str(token))):
                continue
            if key == "pad_token" and i < vocab_size:  # a padding row pads masked positions only: read by nothing
                continue
            row = f"past the model's vocab_size {vocab_size}" if i >= vocab_size else \
                f"a padding row of the model's vocab_size {vocab_size}, which it never emits"
            raise ConfigError(f"the tokenizer in {folder} has {key} {str(token)!r}, which is not in its vocabulary "
                              f"(transformers added it as token {i}, {row}): set {key} in its tokenizer_config.json "
                              f"(or special_tokens_map.json) to a token of the vocabulary")


def _defined_tokens(folder):
    """Whether a token is one the folder's tokenizer files define (tokenizer.json's vocabulary or added tokens, or
    tokenizer_config.json's added_tokens_decoder) rather than one transformers adds at load (a special token they
    lack: it gets the next id); None without a tokenizer.json that reads (a SentencePiece or tekken folder)."""
    from tokenizers import Tokenizer

    try:
        files = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    except Exception:  # noqa: BLE001 - none, or one tokenizers cannot parse (its bare Exception): another file was read
        return None
    decoder = _tokenizer_config(folder).get("added_tokens_decoder")
    decoder = decoder.values() if isinstance(decoder, dict) else ()
    listed = {str(t.get("content")) for t in decoder if isinstance(t, dict)}
    return lambda token: files.token_to_id(token) is not None or token in listed


def load_tokenizer(tokenizer_dir: str, vocab_size: int | None, template_kwargs: dict | None = None):
    """The base's tokenizer from its Hugging Face folder, checked against the model's vocabulary size (None: not
    checked), its chat template rendered with `template_kwargs` (--chat-template-kwargs)."""
    if not Path(tokenizer_dir).is_dir():
        raise ConfigError(f"tokenizer folder {tokenizer_dir} does not exist: pass the base model's Hugging Face "
                          "folder to --tokenizer-dir")
    try:
        tok = auto_tokenizer(tokenizer_dir, template_kwargs)
    except TokenizerError as e:
        raise ConfigError(f"cannot load a tokenizer from {tokenizer_dir} ({e}): "
                          f"pass the base model's Hugging Face folder to --tokenizer-dir") from None
    n = len(tok)
    if vocab_size is not None:
        refuse_added_specials(tok, tokenizer_dir, vocab_size)
    # models pad their vocabulary a little beyond the tokenizer's (Qwen2: 151936 vs 151665), never below it
    if vocab_size is not None and (n > vocab_size or n < 0.95 * vocab_size):
        raise ConfigError(f"the tokenizer in {tokenizer_dir} has {n} tokens but the model's vocab_size is {vocab_size}: "
                          f"pass the tokenizer of the base model this checkpoint was converted from")
    return tok
