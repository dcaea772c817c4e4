"""Training data: conversation readers, chat-template rendering with the assistant mask, features layout.

Also home of `make_chat_base`, the tiny random Llama with a character-level ChatML tokenizer that the other
training tests use (the shared tiny models carry no tokenizer)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from redrafter_trt.errors import ConfigError
from redrafter_trt.prompts import load_prompts, prompt_of
from redrafter_trt.train.data import (Conversation, Example, conversation_of, cut_middle, encode, prompt_ids,
                                     read_conversations)
from redrafter_trt.train.features import flatten
from tinymodels import make_hf

CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}"
          "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


# a template showing the tools it is given (as Qwen2.5's and Llama-3.1's do, in a system turn of their own)
TOOLED = ("{% if tools %}{{ '<|im_start|>system\nTools:' }}{% for t in tools %}{{ ' ' + t['function']['name'] }}"
          "{% endfor %}{{ '<|im_end|>\n' }}{% endif %}" + CHATML)


def make_tokenizer(folder: Path, eos: str = "<|im_end|>"):
    """A character-level tokenizer (ids < 100) with ChatML special tokens and a chat template; `eos` another special
    token than <|im_end|> (Qwen2's base <|endoftext|>) takes the id after the newline's."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    extra = [] if eos in specials else [eos]
    vocab = {t: i for i, t in enumerate(specials + [chr(c) for c in range(32, 127)] + ["\n"] + extra)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(specials + extra)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<|im_start|>",
                                   eos_token=eos, pad_token=eos)
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    return fast


def make_chat_base(folder: Path, seed: int = 0) -> Path:
    make_hf(folder, "llama", tie=True, vocab_size=128, seed=seed)
    make_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def _masked_text(tok, ex: Example) -> str:
    return tok.decode([t for t, m in zip(ex.ids, ex.mask) if m])


def test_mask_keeps_only_assistant_turns(tok):
    conv = Conversation(({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo!"},
                         {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao"}))
    ex = encode(tok, conv, max_len=1000)
    assert len(ex.ids) == len(ex.mask)
    assert _masked_text(tok, ex) == "Yo!<|im_end|>Ciao<|im_end|>"
    # system prompt, user turns and role headers are all masked; the newline after <|im_end|> too
    unmasked = tok.decode([t for t, m in zip(ex.ids, ex.mask) if not m])
    assert "Be brief." in unmasked and "Hi" in unmasked and "Bye" in unmasked and "assistant\n" in unmasked


def test_an_answer_is_not_trained_past_an_eos_inside_it(tok):
    """An answer holding the EOS (<|im_end|> here) mid-way is trained through it: the tokens after it never follow
    an EOS in generation."""
    conv = Conversation(({"role": "user", "content": "q"}, {"role": "assistant", "content": "Hi<|im_end|>ab"}))
    ex = encode(tok, conv, max_len=1000)
    assert _masked_text(tok, ex) == "Hi<|im_end|>" and "Hi<|im_end|>ab<|im_end|>" in tok.decode(ex.ids)


def test_an_answer_holding_a_special_token_is_trained_through_a_plain_text_turn_end(tmp_path):
    """Only whitespace after an answer's last special token is the template's separator, left untrained: an answer
    holding one mid-way (here <|im_start|>) in a template whose turns end in plain text is trained through its
    words after it and the template's turn end."""
    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = ("{% for m in messages %}{% if m.role == 'user' %}{{ 'User: ' + m.content + '\n' }}"
                         "{% else %}{{ 'Bot: ' + m.content + '\n\n' }}{% endif %}{% endfor %}"
                         "{% if add_generation_prompt %}{{ 'Bot: ' }}{% endif %}")
    conv = conversation_of({"messages": [{"role": "user", "content": "q"},
                                         {"role": "assistant", "content": "x<|im_start|>yz"}]})
    assert _masked_text(tok, encode(tok, conv, max_len=1000)) == "x<|im_start|>yz\n\n"


def test_adjacent_answers_are_each_trained_whole(tmp_path):
    """A template with no header before an answer renders consecutive answers edge to edge, the second starting
    where the first ends: each is trained whole, the second's first token too."""
    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = ("{% for m in messages %}{% if m.role == 'user' %}"
                         "{{ '<|im_start|>' + m.content + '<|im_start|>' }}"
                         "{% else %}{{ m.content + '<|im_end|>' }}{% endif %}{% endfor %}")
    conv = conversation_of({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "AB"},
                                         {"role": "assistant", "content": "CD"}]})
    assert _masked_text(tok, encode(tok, conv, max_len=1000)) == "AB<|im_end|>CD<|im_end|>"


def test_an_assistant_turn_of_weight_0_is_not_trained(tok, tmp_path):
    """OpenAI's fine-tuning files mark an assistant turn not to learn from with `"weight": 0`: it was trained as every
    other answer. It is now masked out as a prompt is (kept as context), and a conversation with no other answer
    is one with no answer."""
    from redrafter_trt.train.dataset import unique

    path = tmp_path / "ft.jsonl"
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo!", "weight": 0},
             {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao", "weight": 1}]
    path.write_text("\n".join(json.dumps({"messages": m}) for m in (turns, turns[:2])))
    kept, untrained = read_conversations(path)
    assert _masked_text(tok, encode(tok, kept, max_len=1000)) == "Ciao<|im_end|>"
    assert "Yo!" in tok.decode(encode(tok, kept, max_len=1000).ids)
    assert kept.has_answer and not untrained.has_answer
    # a copy trained on both answers is another conversation, not a duplicate of it
    both = conversation_of({"messages": [{k: v for k, v in m.items() if k != "weight"} for m in turns]})
    assert len(unique([kept, both])) == 2


@pytest.mark.parametrize("weight", ["0", 2, -1, 0.5, True, False])
def test_an_assistant_turn_of_another_weight_is_refused(tmp_path, weight):
    """OpenAI's fine-tuning files allow an assistant turn's `weight` to be 0 or 1: "0" (a string), 2 or -1 were read
    as no weight, the turn trained without a word whatever the file meant. The record is now refused, naming it. JSON's
    true and false are no integers (Python's True == 1): they were read as 1 and 0."""
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo!", "weight": weight}]
    with pytest.raises(ValueError, match=rf"`messages` message 2 has weight {re.escape(repr(weight))}: OpenAI's "
                                         r"fine-tuning files allow 0 \(not trained\) or 1"):
        conversation_of({"messages": turns})
    system, result = {"role": "system", "content": "S", "weight": weight}, {"role": "tool", "content": "18C"}
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    for ok in (0, 1, None):  # a user, system or tool turn's weight is not read (OpenAI's files give them none)
        conversation_of({"messages": [system, {**turns[0], "weight": weight}, call, {**result, "weight": weight},
                                      {**turns[1], "weight": ok}]})


def test_mask_with_explicit_system_and_truncation(tok):
    conv = Conversation(({"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                         {"role": "assistant", "content": "ABCDEFGH"}))
    full = encode(tok, conv, max_len=1000)
    cut = encode(tok, conv, max_len=len(full.ids) - 6)
    assert _masked_text(tok, cut) == "ABCD"
    assert sum(full.mask) == len("ABCDEFGH") + 1


def test_prompt_ids_end_with_assistant_header(tok):
    conv = Conversation(({"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}))
    assert tok.decode(prompt_ids(tok, conv, 1000)).endswith("<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n")


def test_a_cut_keeps_the_first_and_last_halves_the_longer_one_last():
    assert cut_middle(list(range(10)), 4) == [0, 1, 8, 9]
    assert cut_middle(list(range(10)), 5) == [0, 1, 7, 8, 9]
    assert cut_middle(list(range(3)), 5) == [0, 1, 2]


def test_a_prompt_cut_for_distillation_keeps_its_head_and_the_assistant_header(tok):
    from redrafter_trt.train.dataset import unique_prompts
    conv = Conversation(({"role": "user", "content": "Q" * 200}, {"role": "assistant", "content": "A"}))
    full = prompt_ids(tok, conv)
    (ids,), cut = unique_prompts(tok, [conv], 32)
    assert cut == 1 and len(ids) == 30 and ids[:15] == full[:15]
    assert tok.decode(ids).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert prompt_ids(tok, conv, 30) == ids


@pytest.mark.parametrize("bos", [False, True], ids=["no-bos", "bos"])
@pytest.mark.parametrize("answer", ["\n\nFirst, a list", "  Indented", " Hello there", "Plain"])
def test_an_answer_opening_with_whitespace_is_trained_after_the_prompts_own_tokens(smollm2, answer, bos):
    """SmolLM2's byte-level BPE merged the "\n" closing "<|im_start|>assistant\n" with an answer's leading "\n" or
    " " when the whole conversation was tokenized at once: the drafter was trained after a token the base never sees
    after its prompt, and the answer's first token was no target. The tokens before the answer are now the prompt's
    (`prompt_ids`, as run and serve tokenize it), the targets the answer's own tokens; a tokenizer that adds a BOS
    (Llama's) adds none between the pieces."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    if bos:  # SmolLM2's <|endoftext|> as a BOS its tokenizer adds
        bos_id = tok.convert_tokens_to_ids("<|endoftext|>")
        tok._tokenizer.post_processor = processors.TemplateProcessing(
            single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos_id)])
        assert tok("Hi")["input_ids"][0] == bos_id
    conv = Conversation(({"role": "user", "content": "Hi"}, {"role": "assistant", "content": answer}))
    ex, prompt = encode(tok, conv, max_len=1000), prompt_ids(tok, conv)
    assert list(ex.ids[: len(prompt)]) == prompt
    targets = [t for t, m in zip(ex.ids, ex.mask) if m]
    assert targets == tok(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert list(ex.ids) == prompt + targets + tok("\n", add_special_tokens=False)["input_ids"]


def test_a_prompt_ending_in_whitespace_keeps_its_own_tokens_before_the_answer(smollm2):
    """A generation prompt ending in two newlines (Llama-3's header) before an answer opening with a letter: SmolLM2's
    byte-level BPE gives the whole conversation "\n", "\n" there (its regex leaves a whitespace run's last character
    to what follows), the prompt alone "\n\n". No token ran across the answer's start, so the whole text's tokens were
    kept: the base's hidden state was taken after a token pair it never sees after its prompt. They are now the
    prompt's own (`prompt_ids`, as run and serve tokenize it)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    tok.chat_template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n\n' + m['content'] + '<|im_end|>' }}"
                         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n\n' }}{% endif %}")
    turns = ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"},
             {"role": "user", "content": "More"}, {"role": "assistant", "content": "Sure"})
    ex = encode(tok, Conversation(turns), max_len=1000)
    prompt = prompt_ids(tok, Conversation(turns))
    assert list(ex.ids[: len(prompt)]) == prompt and ex.mask[len(prompt)]
    header = tok("<|im_start|>assistant\n\n", add_special_tokens=False)["input_ids"]
    firsts = [i for i, m in enumerate(ex.mask) if m and not ex.mask[i - 1]]
    assert [list(ex.ids[i - len(header): i]) for i in firsts] == [header, header]  # the second answer's too
    targets = [t for t, m in zip(ex.ids, ex.mask) if m]
    assert targets == tok("Hello there<|im_end|>Sure<|im_end|>", add_special_tokens=False)["input_ids"]


def test_a_prompt_without_special_tokens_keeps_its_own_tokens_before_the_answer(smollm2):
    """A template of no special tokens ("user:\n\nHi\n\nassistant:\n\n"): the check of the tokens before an answer
    starts at the text's start (no special token before it to start from). SmolLM2's byte-level BPE gives the whole
    text "\n", "\n" before the answer's first letter, the prompt alone "\n\n": the tokens before the answer must be
    the prompt's (`prompt_ids`), as run and serve tokenize it."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] + ':\n\n' + m['content'] + '\n\n' }}{% endfor %}"
                         "{% if add_generation_prompt %}{{ 'assistant:\n\n' }}{% endif %}")
    conv = Conversation(({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}))
    ex = encode(tok, conv, max_len=1000)
    first = ex.mask.index(True)
    assert list(ex.ids[:first]) == prompt_ids(tok, conv)


def test_only_the_second_prompt_ending_in_split_whitespace_keeps_its_own_tokens(smollm2):
    """Of two answers, the first after a prompt the whole text tokenizes as it does alone, the second after one
    ending in "\n\n" (SmolLM2's byte-level BPE splits it before a letter in the whole text, not alone): one prompt
    whose tokens differ is enough to tokenize the text in pieces, and the tokens before the second answer are its
    prompt's alone, as serve tokenizes that turn's prompt."""
    from transformers import AutoTokenizer

    from redrafter_trt.tokens import render_chat

    tok = AutoTokenizer.from_pretrained(smollm2)
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] + '<|im_end|>' }}"
                         "{% else %}{{ m['content'] }}{% endif %}{% endfor %}")
    turns = [{"role": "user", "content": "Q1:"}, {"role": "assistant", "content": "Sure"},
             {"role": "user", "content": "Q2:\n\n"}, {"role": "assistant", "content": "Yes"}]
    ex = encode(tok, Conversation(tuple(turns)), max_len=1000)
    second = [i for i, m in enumerate(ex.mask) if m and not ex.mask[i - 1]][1]
    prompt = render_chat(tok, turns[:3], add_generation_prompt=True)
    assert list(ex.ids[:second]) == tok(prompt, add_special_tokens=False)["input_ids"]


def test_the_prompts_own_tokens_are_checked_in_linear_time(smollm2, monkeypatch):
    """Each answer's tokens before it were checked against the text up to it tokenized whole, again for every answer:
    a conversation of 40 answers was about 20 times its text tokenized, 8 times slower to encode than before the
    check. The check starts at the last special token before the answer (a tokenizer splits those out first, so the
    text before one tokenizes alone as in the whole), and the ids are the same."""
    from transformers import AutoTokenizer

    from redrafter_trt.tokens import render_chat

    tok = AutoTokenizer.from_pretrained(smollm2)
    words = "the quick brown fox jumps over a lazy dog".split()
    turns = tuple({"role": ("user", "assistant")[i % 2], "content": " ".join(words[(i + j) % 9] for j in range(60))}
                  for i in range(80))
    conv = Conversation(turns)
    text = render_chat(tok, list(turns), add_generation_prompt=False)
    seen = []
    real = type(tok).__call__
    monkeypatch.setattr(type(tok), "__call__", lambda self, t, **kw: seen.append(len(t)) or real(self, t, **kw))
    ex = encode(tok, conv, max_len=10**6)
    assert sum(seen) < 3 * len(text)
    monkeypatch.undo()
    whole = tok(text, add_special_tokens=False)["input_ids"]
    assert list(ex.ids) == whole  # ChatML's answers open after a special token and a newline: nothing is cut


def test_readers(tmp_path):
    jl = tmp_path / "d.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in [
        {"question": "1+1?", "answer": "2"},
        {"prompt": "only a prompt"},
        {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]},
        {"instruction": "do", "output": "done"},
    ]) + "\n\n")
    convs = read_conversations(jl)
    assert [c.has_answer for c in convs] == [True, False, True, True]
    assert convs[0].messages[1] == {"role": "assistant", "content": "2"}
    sg = tmp_path / "s.json"
    sg.write_text(json.dumps([{"id": "x", "conversations": [{"from": "gpt", "value": "greeting"},
                                                            {"from": "human", "value": "h"},
                                                            {"from": "gpt", "value": "g"}]}]))
    (conv,) = read_conversations(sg)
    assert [m["role"] for m in conv.messages] == ["user", "assistant"]


def test_a_txt_file_gives_train_the_prompts_run_reads(tmp_path):
    """run --input-file reads a .txt file as one prompt per line; train refused it ('line 1 is not valid JSON'). Its
    lines are read as run reads them (run.py's readlines: the newline kept); a blank line, a prompt there, has nothing
    to train on."""
    path = tmp_path / "prompts.txt"
    path.write_text('What is 2+2?\n\n{"prompt": "kept as text"}\n')
    convs = read_conversations(path)
    assert [list(c.messages) for c in convs] == [[{"role": "user", "content": t}] for t in load_prompts(path)
                                                 if t.strip()]
    assert [c.messages[0]["content"] for c in convs] == ["What is 2+2?\n", '{"prompt": "kept as text"}\n']
    assert not any(c.has_answer for c in convs)


@pytest.mark.parametrize("content, match", [("", "holds no records"), ('{"x": 1}\n', r"no prompt: .* \(1 record, the first at line 1\)"),
                                            ("{bad\n", "line 1 is not valid JSON")])
def test_reader_errors(tmp_path, content, match):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(ConfigError, match=match):
        read_conversations(p)


@pytest.mark.parametrize("read", [read_conversations, load_prompts], ids=["train --data", "run --input-file"])
def test_jsonl_of_message_lists_says_to_wrap_them(tmp_path, read):
    """jsonl whose lines are bare lists of messages once read as one broken JSON list ('Extra data at line 2 ... or
    write jsonl', which it is); a list on a later line was 'got list' with no hint."""
    p = tmp_path / "x.jsonl"
    p.write_text('[{"role": "user", "content": "a"}]\n[{"role": "user", "content": "b"}]\n')
    with pytest.raises(ConfigError, match=r"line 1 is a JSON list, not an object: .* wrap each line's messages as "
                                          r'\{"conversations": \[\.\.\.\]\}'):
        read(p)
    p.write_text('[\n{"prompt": "a"}\n]\n]\n')  # a broken JSON list is still said to be one
    with pytest.raises(ConfigError, match=r"is not valid JSON \(Extra data: line 4\): fix it, or write jsonl"):
        read(p)
    p.write_text('{"prompt": "a"}\n[{"role": "user", "content": "b"}]\n')
    with pytest.raises(ConfigError, match=r'line 2: .*got list: wrap a list of messages as \{"conversations"'):
        load_prompts(p)
    p.write_text('[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]\n')  # a one-line file
    with pytest.raises(ConfigError, match=r'no prompt: .*\(this is one message: put a conversation\'s messages in '
                                          r'\{"conversations": \[\.\.\.\]\}\)') as e:
        read(p)
    assert "record 1 of its JSON list" in str(e.value)  # before the reason (run) or after it, counted (train)
    p.write_text('{"conversations": [{"role": "user", "content": "a"}]}\n')  # the fix the message gives works
    assert len(read(p)) == 1


def test_roles_are_read_whatever_their_case_by_run_and_train(tmp_path):
    """A ShareGPT dump writing "Human" trained (train lowercases the roles) but `run --input-file` refused it: "has
    no human/user message"."""
    sg = tmp_path / "s.json"
    sg.write_text(json.dumps([{"conversations": [{"from": "Human", "value": "h"}, {"from": "GPT", "value": "g"}]}]))
    assert load_prompts(sg) == ["h"]
    (conv,) = read_conversations(sg)
    assert conv.messages == ({"role": "user", "content": "h"}, {"role": "assistant", "content": "g"})


def test_flatten_windows_do_not_cross_examples():
    a = Example((5, 6, 7, 8, 9), (False, True, True, True, True))
    b = Example((1, 2, 3), (False, True, True))
    tok, mask, anchors, starts = flatten([a, b], tail=4)
    assert starts == [0, 6]
    # anchors: t with t+1 and t+2 assistant tokens: a at 0,1,2; b at 6
    assert anchors.tolist() == [0, 1, 2, 6]
    from redrafter_trt.train.features import Features
    f = Features(tok, mask, anchors, torch.zeros(len(anchors), 4))
    win, valid = f.windows(torch.arange(4), k=3)
    assert win[0].tolist() == [6, 7, 8, 9]
    assert valid.tolist() == [[True, True, True], [True, True, False], [True, False, False], [True, False, False]]
    # a's last anchor reaching past a's end: the gap ends the window, b's answer token after it stays invalid
    assert f.windows(torch.tensor([2]), k=4)[1].tolist() == [[True, False, False, False]]


def test_packaged_training_prompts_share_no_eight_words_with_mt_bench():
    """The evaluation set must not leak into the packaged training prompts: no run of 8 consecutive words of any
    MT-Bench turn appears in any of them (and they load as prompts)."""
    from redrafter_trt.quickstart import mt_bench_path
    from redrafter_trt.train import default_data

    def shingles(text: str) -> set[tuple[str, ...]]:
        words = "".join(c.lower() if c.isalnum() else " " for c in text).split()
        return {tuple(words[i: i + 8]) for i in range(len(words) - 7)}

    mt = set()
    for line in mt_bench_path().read_text().splitlines():
        for turn in json.loads(line)["turns"]:
            mt |= shingles(turn)
    total = 0
    for path in default_data():
        convs = read_conversations(path)
        total += len(convs)
        for rec in map(json.loads, path.read_text().splitlines()):
            leaked = shingles(rec["prompt"]) & mt
            assert not leaked, f"{path.name}: {rec['prompt'][:80]!r} shares {leaked} with MT-Bench"
    assert total > 3000


@pytest.mark.parametrize("choice, device, native, expected", [
    ("auto", "cpu", True, torch.bfloat16),
    ("auto", "cpu", False, torch.float32),
    ("auto", "cuda", False, torch.bfloat16),
    ("float32", "cuda", True, torch.float32),
    ("bfloat16", "cpu", False, torch.bfloat16),
])
def test_dtype_auto_follows_the_hardware(monkeypatch, tmp_path, choice, device, native, expected):
    from redrafter_trt.train import config

    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: native)
    cfg = config.TrainConfig(base=tmp_path, data=[], output=tmp_path / "out", base_dtype=choice, train_dtype=choice)
    assert cfg.torch_dtype(cfg.base_dtype, torch.device(device)) == expected
    assert cfg.torch_dtype(cfg.train_dtype, torch.device(device)) == expected


@pytest.mark.parametrize("avx512_bf16, amx, native", [(False, False, False), (True, False, True), (False, True, True)])
def test_native_bfloat16_means_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native):
    """A review: `auto` took bfloat16 wherever oneDNN runs it, which includes plain AVX-512 (emulated): on an Ice
    Lake Xeon distillation then took twice float32's time. Only AVX512-BF16 or AMX counts as native now."""
    from redrafter_trt.train import config

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    assert config.cpu_has_native_bf16() is native


def test_the_cache_key_follows_the_tokenizer_and_generation_config(tmp_path):
    """Fixing a base's stop tokens (generation_config.json) or chat template must redistill, not reuse answers
    that ran past the end of their turn."""
    from redrafter_trt.train.baseid import base_id

    (tmp_path / "config.json").write_text("{}")
    before = base_id(tmp_path)
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": [2, 7]}')
    with_eos = base_id(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": "x"}')
    with_template = base_id(tmp_path)
    # transformers 5 saves the template in a file of its own (SmolLM2's folder): a --resume after editing it went on
    # with other examples, its base unchanged
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert len({before, with_eos, with_template, base_id(tmp_path)}) == 4


def test_the_hidden_state_cache_key_follows_the_loss_mask(tmp_path):
    """The same tokens with another loss mask have other anchors (other rows of hidden states) and soft targets: they
    must not share a cache entry with them."""
    from redrafter_trt.train import features
    from redrafter_trt.train.objective import soft_target_cache

    answers = [Example((1, 2, 3, 4, 5), (False, False, True, True, True))]
    longer = [Example((1, 2, 3, 4, 5), (False, True, True, True, True))]
    assert features.cache_key("base", answers) != features.cache_key("base", longer)
    assert features.hidden_folder(tmp_path, "base", answers) != features.hidden_folder(tmp_path, "base", longer)
    assert soft_target_cache(tmp_path, "base", answers, None, torch.device("cpu"))[0] != \
        soft_target_cache(tmp_path, "base", longer, None, torch.device("cpu"))[0]
    assert features.cache_key("base", answers) == features.cache_key("base", [Example((1, 2, 3, 4, 5), answers[0].mask)])


def test_the_cache_key_follows_the_vocabulary_files_of_a_base_without_tokenizer_json(tmp_path):
    """A Qwen2 base without tokenizer.json is tokenized from vocab.json and merges.txt (a SentencePiece one from
    tokenizer.model): editing them kept the cache key, and distilled answers and hidden states of the old tokens were
    reused. With a tokenizer.json they are not read, and do not move the key (caches keyed before stay valid)."""
    from redrafter_trt.train.baseid import base_id

    (tmp_path / "config.json").write_text("{}")
    keys = [base_id(tmp_path)]
    for name in ("vocab.json", "merges.txt", "tokenizer.model", "tekken.json"):
        (tmp_path / name).write_text("a")
        keys.append(base_id(tmp_path))
        (tmp_path / name).write_text("b")
        keys.append(base_id(tmp_path))
    assert len(set(keys)) == len(keys)
    (tmp_path / "tokenizer.json").write_text("{}")
    with_json = base_id(tmp_path)
    (tmp_path / "merges.txt").write_text("c")
    assert base_id(tmp_path) == with_json


def test_runs_sharing_a_distill_cache_keep_their_own_files(tmp_path):
    """Two runs answering in one cache folder at once, whose batches start with the same prompt, once wrote one
    file name each: the second replaced the first, and every later run failed reading it."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redrafter_trt.train.distill import distill

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)

    def load():
        return AutoModelForCausalLM.from_pretrained(base).eval()

    def enc(text):
        chat = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        return tok(chat, add_special_tokens=False)["input_ids"]

    x, y, z = enc("Hello there friend"), enc("Why?"), enc("What now")
    one, other = tmp_path / "one", tmp_path / "other"
    distill(load, tok, [x, y], one, max_new_tokens=8, batch_size=2)
    distill(load, tok, [x, z], other, max_new_tokens=8, batch_size=2)
    for f in other.glob("hidden-*"):  # as if both runs had written into one folder
        shutil.copy(f, one / f.name)
    with (one / "answers.jsonl").open("a") as index:
        index.write((other / "answers.jsonl").read_text())
    assert len(list(one.glob("hidden-*"))) == 2
    out = distill(load, tok, [x, y, z], one, max_new_tokens=8, batch_size=2)
    assert len(out) == 3 and all(h.load().shape[0] == len(ans) for ans, h in out)


def test_a_tokenizer_without_eos_or_pad_distills_up_to_the_generation_configs_stop(tmp_path):
    """A base whose tokenizer names no EOS and no pad token (its stop tokens only in generation_config.json) failed
    distillation with a TypeError traceback: the padding id was None."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redrafter_trt.train.distill import distill

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    bare = AutoTokenizer.from_pretrained(base, eos_token=None, pad_token=None)
    assert bare.eos_token_id is None and bare.pad_token_id is None
    prompts = [[1, 5, 9, 13], [1, 7]]

    def load():
        return AutoModelForCausalLM.from_pretrained(base).eval()

    want = [a for a, _ in distill(load, tok, prompts, tmp_path / "a", max_new_tokens=4, batch_size=2)]
    assert [a for a, _ in distill(load, bare, prompts, tmp_path / "b", max_new_tokens=4, batch_size=2)] == want


def test_an_answer_index_torn_by_a_kill_loses_only_its_torn_line(tmp_path):
    """A run killed mid-line left the index without its newline; the next run's first line was glued to it, and
    that answer too was lost to every later run."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redrafter_trt.train.distill import distill, read_cache

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)

    def load():
        return AutoModelForCausalLM.from_pretrained(base).eval()

    folder = tmp_path / "d"
    distill(load, tok, [[1, 5, 6]], folder, max_new_tokens=4, batch_size=1)
    index = folder / "answers.jsonl"
    index.write_text(index.read_text().rstrip("\n")[:-5])  # killed while writing its line
    assert read_cache(folder) == {}
    distill(load, tok, [[1, 5, 6], [1, 7, 8]], folder, max_new_tokens=4, batch_size=1)
    assert len(read_cache(folder)) == 2



def test_a_distillation_killed_before_indexing_a_batch_leaves_no_file_no_line_names(tmp_path, monkeypatch):
    """A run killed after a batch's hidden-state file took its name but before its index lines were appended left a
    file no index line names: never read (its prompts were answered again into another file) nor removed. The lines
    now go first; the file is named only once they are written."""
    import os

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redrafter_trt.train import distill as distill_module
    from redrafter_trt.train.distill import distill, read_cache

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)

    def load():
        return AutoModelForCausalLM.from_pretrained(base).eval()

    real_write = os.write

    def killed_at_the_index(fd, data):
        if b'"answer_ids"' in data:
            raise KeyboardInterrupt  # the kill, at the batch's index lines
        return real_write(fd, data)

    def named_by_no_line(folder):
        named = {json.loads(line)["file"] for f in folder.glob("answers*.jsonl") for line in f.read_text().splitlines()}
        return sorted(f.name for f in folder.glob("hidden-*.safetensors") if f.name not in named)

    folder, prompts = tmp_path / "d", [[1, 5, 6], [1, 7, 8]]
    monkeypatch.setattr(distill_module.os, "write", killed_at_the_index)
    with pytest.raises(KeyboardInterrupt):
        distill(load, tok, prompts, folder, max_new_tokens=4, batch_size=1)
    monkeypatch.setattr(distill_module.os, "write", real_write)
    assert named_by_no_line(folder) == []
    out = distill(load, tok, prompts, folder, max_new_tokens=4, batch_size=1)
    assert named_by_no_line(folder) == [] and len(read_cache(folder)) == 2
    assert all(h.load().shape[0] == len(ans) for ans, h in out)


def test_a_distillation_rerun_after_an_interruption_answers_in_the_uninterrupted_runs_batches(tmp_path,
                                                                                            monkeypatch):
    """A rerun after an interruption formed its batches from the prompts left, not as an uninterrupted run would
    have: in bfloat16 an answer depends on the prompts batched with it (2 of 40 SmolLM2 answers differed), so an
    interrupted distillation gave another drafter than an uninterrupted one under the same --seed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redrafter_trt.train import distill as distill_module

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    prompts = [[1] + [5 + i] * (1 + i % 7) for i in range(40)]  # 8 x batch 2 = 16 per sorting window
    batches, real = [], distill_module.greedy_batch

    def record(model, batch, *a, **k):
        batches.append(sorted(map(tuple, batch)))
        if len(batches) == stop_at:
            raise KeyboardInterrupt
        return real(model, batch, *a, **k)

    monkeypatch.setattr(distill_module, "greedy_batch", record)
    stop_at = 0
    distill_module.distill(lambda: model, tok, prompts, tmp_path / "whole", max_new_tokens=3, batch_size=2)
    whole, batches[:], stop_at = list(batches), [], 4
    with pytest.raises(KeyboardInterrupt):
        distill_module.distill(lambda: model, tok, prompts, tmp_path / "cut", max_new_tokens=3, batch_size=2)
    stop_at = 0
    distill_module.distill(lambda: model, tok, prompts, tmp_path / "cut", max_new_tokens=3, batch_size=2)
    assert batches[:3] + batches[4:] == whole
    # answers cached by another run (less data) leave batches partly answered: the prompts left share batches
    batches[:] = []
    distill_module.distill(lambda: model, tok, prompts[::3], tmp_path / "more", max_new_tokens=3, batch_size=2)
    batches[:] = []
    distill_module.distill(lambda: model, tok, prompts, tmp_path / "more", max_new_tokens=3, batch_size=2)
    assert len(batches) == (len(prompts) - len(prompts[::3]) + 1) // 2


def test_each_distilled_batch_reaches_the_index_in_one_append(tmp_path, monkeypatch):
    """Runs sharing a cache (two drafters for one base at once) append to one answers.jsonl: a buffered file flushed
    every 8 KB, mid-line, and two runs' flushes tore each other's lines. A batch's lines now go in one write()."""
    import os

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redrafter_trt.train import distill as distill_module

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    appends, real = [], os.write
    monkeypatch.setattr(os, "write", lambda fd, data: appends.append(data) or real(fd, data))
    folder = tmp_path / "d"
    distill_module.distill(lambda: AutoModelForCausalLM.from_pretrained(base).eval(), tok,
                           [[1, 5 + i, 6] for i in range(8)], folder, max_new_tokens=4, batch_size=4)
    lines = [a for a in appends if a.startswith(b'{"key"')]
    assert len(lines) == 2 and all(a.count(b"\n") == 4 and a.endswith(b"\n") for a in lines)
    assert (folder / "answers.jsonl").read_bytes() == b"".join(lines)

# Llama-2 / Mistral style: after an optional system message, roles must alternate user/assistant
STRICT = ("{% if messages[0]['role'] == 'system' %}{% set msgs = messages[1:] %}{% else %}{% set msgs = messages %}"
          "{% endif %}{% for m in msgs %}{% if m['role'] != ['user', 'assistant'][loop.index0 % 2] %}"
          "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def _sharegpt(tmp_path, *conversations) -> Path:
    path = tmp_path / "sg.json"
    path.write_text(json.dumps([{"conversations": [{"from": w, "value": v} for w, v in c]} for c in conversations]))
    return path


def test_turns_of_one_role_are_joined_and_a_refused_record_is_named(tmp_path):
    """A strict template (Llama-2, Mistral) once crashed with jinja's traceback on two human turns in a row, or a
    greeting after the system prompt: those are joined for it, or dropped; a record it still refuses is a
    ConfigError naming the file and the record (1-based), in training and in distillation alike. A template that
    takes consecutive turns (ChatML) gets them as they are (they were joined for every template once)."""
    strict = make_tokenizer(tmp_path / "tok")
    chatml = make_tokenizer(tmp_path / "tok")
    strict.chat_template = STRICT
    path = _sharegpt(tmp_path, [("human", "A"), ("human", "B"), ("gpt", "C")],
                     [("system", "S"), ("gpt", "Hello!"), ("human", "Q"), ("gpt", "R")],
                     [("human", "Q"), ("gpt", "R"), ("system", "S"), ("human", "Q2"), ("gpt", "R2")],
                     [("human", "Q"), ("system", "S"), ("human", "Q2")])
    joined, greeted, mid_system, prompt_only = read_conversations(path)
    assert [m["content"] for m in joined.messages] == ["A", "B", "C"]
    assert [m["role"] for m in greeted.messages] == ["system", "user", "assistant"]
    assert _masked_text(strict, encode(strict, joined, 1000)) == "C<|im_end|>"
    assert "A\n\nB<|im_end|>" in strict.decode(encode(strict, joined, 1000).ids)
    assert "A<|im_end|>\n<|im_start|>user\nB<|im_end|>" in chatml.decode(encode(chatml, joined, 1000).ids)
    assert strict.decode(prompt_ids(strict, joined, 1000)).endswith("A\n\nB<|im_end|>\n<|im_start|>assistant\n")
    two_answers = conversation_of({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "R"},
                                                     {"from": "gpt", "value": "S"}]})
    assert _masked_text(chatml, encode(chatml, two_answers, 1000)) == "R<|im_end|>S<|im_end|>"
    assert _masked_text(strict, encode(strict, two_answers, 1000)) == "R\n\nS<|im_end|>"
    assert _masked_text(strict, encode(strict, greeted, 1000)) == "R<|im_end|>"
    where = re.escape(str(path))
    with pytest.raises(ConfigError, match=rf"^{where} record 3 of its JSON list: the base's chat template refuses it "
                                          r"\(Conversation roles must alternate"):
        encode(strict, mid_system, 1000)
    with pytest.raises(ConfigError, match=rf"^{where} record 4 of its JSON list: .* fix or remove that record$"):
        prompt_ids(strict, prompt_only, 1000)


def test_assistant_turns_joined_for_a_strict_template_keep_weight_0(tmp_path):
    """Consecutive assistant turns joined for a strict template (Llama-2, Mistral) lost `"weight": 0`: a turn not to
    learn from was trained with the one it joined. The joined turn is now of weight 0 where all its turns were; where
    only some were (one turn cannot be both) the record is a ConfigError naming it, not an answer trained or dropped
    without a word. A template taking the turns as they are trains each as its weight says."""
    strict, chatml = make_tokenizer(tmp_path / "tok"), make_tokenizer(tmp_path / "tok")
    strict.chat_template = STRICT
    q, r, s = ({"role": "user", "content": "Q"}, {"role": "assistant", "content": "R"},
               {"role": "assistant", "content": "S"})
    later = [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "T"}]
    untrained = conversation_of({"messages": [q, {**r, "weight": 0}, {**s, "weight": 0}, *later]})
    assert _masked_text(strict, encode(strict, untrained, 1000)) == "T<|im_end|>"
    assert "R\n\nS<|im_end|>" in strict.decode(encode(strict, untrained, 1000).ids)
    for first, second in (({**r, "weight": 0}, s), (r, {**s, "weight": 0})):
        mixed = conversation_of({"messages": [q, first, second]}, "ft.jsonl line 2")
        assert _masked_text(chatml, encode(chatml, mixed, 1000)) == ("S" if second is s else "R") + "<|im_end|>"
        with pytest.raises(ConfigError, match=r"^ft.jsonl line 2: the base's chat template refuses it \(consecutive "
                                              r"assistant turns of weight 0 and 1, which it takes only joined into one"
                                              r"\): fix or remove that record$"):
            encode(strict, mixed, 1000)



def test_a_template_refusing_the_joined_turns_too_is_named_before_their_weights(tmp_path):
    """Consecutive assistant turns of weight 0 and 1 (which cannot be joined into one) were blamed for a record the
    template refuses anyway, joined or not (a system turn after the first), and for a template that renders nothing
    ('does not render' then gave the weights as its reason): the template's own error comes first, the weights' only
    where the joined turns would render."""
    strict = make_tokenizer(tmp_path / "tok")
    strict.chat_template = STRICT
    q, r, s = ({"role": "user", "content": "Q"}, {"role": "assistant", "content": "R", "weight": 0},
               {"role": "assistant", "content": "S"})
    late = conversation_of({"messages": [q, r, s, {"role": "system", "content": "late"}, q, s]}, "ft.jsonl line 2")
    with pytest.raises(ConfigError, match=r"^ft.jsonl line 2: the base's chat template refuses it \(Conversation "
                                          r"roles must alternate"):
        encode(strict, late, 1000)
    strict.chat_template = "{{ messages[0]['content'] + 1 }}"  # renders no prompt at all
    with pytest.raises(ConfigError, match=r"^the base's chat template does not render \(TypeError: can only concatenate"):
        encode(strict, conversation_of({"messages": [q, r, s]}, "ft.jsonl line 2"), 1000)


# Mistral-v0.3's chat template, reduced: roles alternate but for tool calls and results, which it writes by id
MISTRAL_TOOLS = ("{% set ns = namespace(i=0) %}{% for m in messages %}"
                 "{% if not (m['role'] == 'tool' or m['tool_calls'] is defined and m['tool_calls']) %}"
                 "{% if (m['role'] == 'user') != (ns.i % 2 == 0) %}"
                 "{{ raise_exception('roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
                 "{% set ns.i = ns.i + 1 %}{% endif %}{% endfor %}{% for m in messages %}"
                 "{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + '[/INST]' }}"
                 "{% elif m['role'] == 'tool' %}{% if m['tool_call_id'] is not defined %}"
                 "{{ raise_exception('a tool result needs its call id') }}{% endif %}"
                 "{{ '[TOOL_RESULTS] ' + m['tool_call_id'] + ': ' + m['content'] + '[/TOOL_RESULTS]' }}"
                 "{% else %}{{ m['content'] }}{% for c in m['tool_calls'] or [] %}"
                 "{{ '[TOOL_CALLS] ' + c['id'] + ' ' + c['function'] | tojson }}{% endfor %}"
                 "{{ '<|im_end|>' }}{% endif %}{% endfor %}")


def test_turns_joined_for_a_strict_template_keep_their_tool_calls_and_results(tmp_path):
    """Consecutive turns of one role joined for a template refusing them (Mistral's) were rebuilt as {role, content}:
    an answer's text followed by its tool call lost the call (trained as the text and a blank line, or the record
    refused), and parallel calls' results were merged into one turn without their ids. The joined answer keeps
    every call (its content the text alone); results, each answering its own call, are never joined."""
    from test_prompts import OPENAI_TOOLS, WEATHER

    from redrafter_trt.tokens import join_roles

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = MISTRAL_TOOLS
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"call_{city}", "type": "function", "function": {"name": "get_weather",
                                                                "arguments": json.dumps({"city": city})}}
        for city in ("Paris", "Rome")]}
    record = {"messages": [{"role": "user", "content": "Weather in Paris"}, {"role": "user", "content": "and Rome?"},
                           {"role": "assistant", "content": "Let me check."}, call,
                           {"role": "tool", "tool_call_id": "call_Paris", "content": "18C"},
                           {"role": "tool", "tool_call_id": "call_Rome", "content": "21C"},
                           {"role": "assistant", "content": "18C and 21C."}], "tools": [WEATHER]}
    conv = conversation_of(record, "agent.jsonl line 1")
    ex = encode(tok, conv, 10_000)
    calls = ('[TOOL_CALLS] call_Paris {"name": "get_weather", "arguments": {"city": "Paris"}}'
             '[TOOL_CALLS] call_Rome {"name": "get_weather", "arguments": {"city": "Rome"}}')
    assert _masked_text(tok, ex) == f"Let me check.{calls}<|im_end|>18C and 21C.<|im_end|>"
    assert "[TOOL_RESULTS] call_Paris: 18C[/TOOL_RESULTS][TOOL_RESULTS] call_Rome: 21C" in tok.decode(ex.ids)
    first = OPENAI_TOOLS["messages"][2]  # as OpenAI writes it: content null
    assert join_roles([first, call]) == [{"role": "assistant", "content": "",
                                          "tool_calls": first["tool_calls"] + call["tool_calls"]}]


def test_an_empty_turn_joined_adds_no_blank_line():
    """Turns were joined two by two: a text, an empty answer and a call gave "hi\n\n" (the text and the empty one
    joined first, the call's empty content then skipped), and an empty user turn before another opened it with a
    blank line. An empty content adds no separator; a speaker's `name` shared by the turns joined is kept."""
    from redrafter_trt.tokens import join_roles

    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c0", "type": "function", "function": {"name": "f", "arguments": {}}}]}
    text, empty = ({"role": "assistant", "content": c} for c in ("hi", ""))
    assert join_roles([text, empty, call]) == [{"role": "assistant", "content": "hi", "tool_calls": call["tool_calls"]}]
    assert join_roles([text, empty]) == [{"role": "assistant", "content": "hi"}]
    assert join_roles([{"role": "user", "content": ""}, {"role": "user", "content": "x"}]) == [
        {"role": "user", "content": "x"}]
    ann, bob = ({"role": "user", "content": "a", "name": who} for who in ("ann", "bob"))
    assert join_roles([ann, ann]) == [{"role": "user", "content": "a\n\na", "name": "ann"}]
    assert join_roles([ann, bob]) == [{"role": "user", "content": "a\n\na"}]


MISTRAL_SYSTEM = ("{% if messages[0]['role'] == 'system' %}{% set sys = messages[0]['content'] %}{% set rest = messages[1:] %}"
                  "{% else %}{% set rest = messages %}{% endif %}{% for m in rest %}{% if m['role'] == 'user' %}"
                  "{% if loop.last and sys is defined %}{{ '[INST] ' + sys + '\\n\\n' + m['content'] + '[/INST]' }}"
                  "{% else %}{{ '[INST] ' + m['content'] + '[/INST]' }}{% endif %}"
                  "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}")


def test_a_record_the_template_renders_out_of_order_is_named(tmp_path):
    """Mistral-v0.3's template puts the system message into the last user turn (and drops it once an answer
    follows), so a record with one cannot be split into turns, nor each answer trained with the turns before it:
    that once ended the run without naming the record (one in a large ShareGPT file)."""
    from redrafter_trt.train.data import encode_answers

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = MISTRAL_SYSTEM
    turns = ({"role": "user", "content": "Q"}, {"role": "assistant", "content": "R"},
             {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "R2"})
    plain = conversation_of({"messages": list(turns)}, "d.jsonl line 1")
    assert _masked_text(tok, encode(tok, plain, 1000)) == " R<|im_end|> R2<|im_end|>"
    system = conversation_of({"messages": [{"role": "system", "content": "S"}, *turns]}, "d.jsonl line 2")
    with pytest.raises(ConfigError, match=r"^d\.jsonl line 2: the base's chat template does not render it prefix by "
                                          r"prefix .* remove that record, or train on the base's own answers with "
                                          r"--distill \(it renders only the prompt\)$"):
        encode(tok, system, 1000)
    with pytest.raises(ConfigError, match=r"^d\.jsonl line 2: .* nor each answer with the turns before it, so its "
                                          r"assistant turns cannot be located: drop its system message or later "):
        encode_answers(tok, system, 1000)  # the system message is dropped once an answer follows it


def test_tools_a_template_moves_into_the_last_turn_are_named_in_its_refusal(tmp_path):
    """Mistral-v0.3's template puts a conversation's tools before its last user turn, so a multi-turn conversation
    with tools cannot be split into turns either; the refusal blamed a system message it does not have and said to
    drop that. It names the tools."""
    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'user' %}{% if loop.index0 == messages|length - 2 "
                         "and tools %}{{ '[TOOLS]' + tools|length|string }}{% endif %}{{ '[INST] ' + m['content'] + "
                         "'[/INST]' }}{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}")
    turns = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "R"},
             {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "R2"}]
    tooled = conversation_of({"messages": turns, "tools": [{"name": "f"}]}, "d.jsonl line 1")
    with pytest.raises(ConfigError, match=r"^d\.jsonl line 1: .* moves a system message and the tools into the last "
                                          r"user turn; .*: drop its tools or later turns, "):
        encode(tok, tooled, 1000)


# MISTRAL_TOOLS showing the tools before the last user turn, as Mistral-v0.3's does: no prefix-by-prefix render
MISTRAL_MOVED_TOOLS = MISTRAL_TOOLS.replace(
    "namespace(i=0) %}", "namespace(i=0, last=0) %}{% for m in messages %}{% if m['role'] == 'user' %}"
    "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}").replace(
    "{{ '[INST] ' + m['content']", "{% if loop.index0 == ns.last and tools %}{{ '[AVAILABLE_TOOLS]' }}{% endif %}"
    "{{ '[INST] ' + m['content']")


def test_consecutive_answers_trained_answer_by_answer_are_joined_for_a_template_refusing_them(tmp_path):
    """A conversation split answer by answer (Mistral's template moves the tools into the last user turn) marked
    each answer before the trained one as context (weight 0): the first of two consecutive answers, which a template
    wanting alternating roles takes only joined, then made a turn of weight 0 and 1, and the record was refused as
    one the template refuses (a tool-calling one stopped the run, where it was left out before). They train as the
    template takes them: joined into one answer, as a client sends serve the base's one turn."""
    from test_prompts import WEATHER

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.data import encode_answers
    from redrafter_trt.train.dataset import read_all

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = MISTRAL_MOVED_TOOLS
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    record = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                           {"role": "user", "content": "Paris?"}, {"role": "assistant", "content": "Let me see."},
                           {"role": "assistant", "content": "One moment."}, call,
                           {"role": "tool", "tool_call_id": "c1", "content": "18C"},
                           {"role": "assistant", "content": "18C."}], "tools": [WEATHER]}
    examples, past = encode_answers(tok, conversation_of(record, "agent.jsonl line 1"), 10_000)
    called = '[TOOL_CALLS] c1 {"name": "get_weather", "arguments": {"city": "Paris"}}'
    assert [_masked_text(tok, ex) for ex in examples] == [
        "Hello.<|im_end|>", f"Let me see.\n\nOne moment.{called}<|im_end|>", "18C.<|im_end|>"] and past == 0
    path = tmp_path / "agent.jsonl"
    path.write_text(json.dumps(record) + "\n")
    assert len(read_all(TrainConfig(base=tmp_path, data=[path], output=tmp_path / "out"), tok)) == 1


# Qwen3's chat template, reduced to what splits a conversation: an answer after the last user turn opens with a
# <think> block (empty when it has no reasoning), one before it is rendered without
QWEN3_THINK = ("{% set ns = namespace(last=0) %}{% for m in messages %}{% if m['role'] == 'user' %}"
               "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{% for m in messages %}"
               "{% if m['role'] == 'assistant' and loop.index0 > ns.last %}"
               "{{ '<|im_start|>assistant\n<think>\n\n</think>\n\n' + m['content'] + '<|im_end|>\n' }}"
               "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
               "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_qwen3s_template_trains_each_of_several_answers_in_an_example_of_its_own(tmp_path):
    """Qwen3's template gives the last answer an empty <think> block and earlier ones none, so a conversation of
    several answers does not render prefix by prefix: it was refused (drop its later turns, or --distill), every
    multi-turn ShareGPT chat with it. What serve sends the base for an answer is the conversation up to it, the
    answers before it rendered as history, and the base writes it as the last answer: each answer trains in an
    example of its own, the conversation through it rendered whole, the turns before it context. One answer trains
    as before, its empty <think> block with it (what the base answers with thinking off); a template that renders
    the conversation prefix by prefix still gives one example, `encode`'s."""
    from redrafter_trt.train.data import encode_answers

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = QWEN3_THINK
    turns = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "R"},
             {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "R2"}]
    one = conversation_of({"messages": turns[:2]}, "d.jsonl line 1")
    assert _masked_text(tok, encode(tok, one, 1000)) == "<think>\n\n</think>\n\nR<|im_end|>"
    two = conversation_of({"messages": turns}, "d.jsonl line 2")
    (first, second), past = encode_answers(tok, two, 1000)
    assert past == 0
    assert tok.decode(first.ids) == tok.apply_chat_template(turns[:2], tokenize=False)
    assert tok.decode(second.ids) == tok.apply_chat_template(turns, tokenize=False)
    assert [_masked_text(tok, ex) for ex in (first, second)] == ["<think>\n\n</think>\n\nR<|im_end|>",
                                                                 "<think>\n\n</think>\n\nR2<|im_end|>"]
    start = second.mask.index(True)  # the second answer's first token: past a --max-seq-len of `start`
    examples, past = encode_answers(tok, two, start)
    assert [ex.ids for ex in examples] == [first.ids[:start]] and past == 1
    context = conversation_of({"messages": [*turns[:2], {"role": "user", "content": "Mid"},
                                            {"role": "assistant", "content": "Zz", "weight": 0}, *turns[2:]]})
    examples, past = encode_answers(tok, context, 1000)  # an answer of weight 0 gives no example, only context
    assert [_masked_text(tok, ex) for ex in examples] == ["<think>\n\n</think>\n\nR<|im_end|>",
                                                          "<think>\n\n</think>\n\nR2<|im_end|>"] and past == 0
    assert "Zz" in tok.decode(examples[1].ids)
    tok.chat_template = CHATML
    [whole], past = encode_answers(tok, context, 1000)
    assert _masked_text(tok, whole) == "R<|im_end|>R2<|im_end|>" and past == 0
    [whole], past = encode_answers(tok, two, 1000)
    assert (whole.ids, whole.mask, past) == (encode(tok, two, 1000).ids, encode(tok, two, 1000).mask, 0)


def test_a_chat_trained_answer_by_answer_counts_as_one_conversation_and_leaves_out_answers_past_max_seq_len(
        tmp_path, caplog):
    """A conversation Qwen3's template trains answer by answer gives an example per answer: --max-examples and the
    held-out split count conversations, its examples all on one side (they share its prompt); an example whose
    answer starts past --max-seq-len would train nothing, and is left out, counted."""
    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = QWEN3_THINK

    def chat(i, first):
        return {"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": first},
                             {"role": "user", "content": "More?"}, {"role": "assistant", "content": f"Yes {i}."}]}

    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(chat(i, f"A{i}.")) + "\n" for i in range(8)))
    cfg = TrainConfig(base=tmp_path, data=[data], output=tmp_path / "out", max_examples=5, eval_examples=2,
                      max_seq_len=1000)
    train, held = build_examples(cfg, tok, lambda: pytest.fail("the base ran"), tmp_path / "c", torch.float32)

    def prompt(ex):
        return tok.decode(ex.ids).split("<|im_start|>assistant")[0]

    assert (len(train), len(held)) == (6, 4)
    assert len({prompt(ex) for ex in held}) == 2 and not {prompt(ex) for ex in held} & {prompt(ex) for ex in train}
    data.write_text(json.dumps(chat(0, "word " * 20)) + "\n" + json.dumps(chat(1, "A1.")) + "\n")
    cfg = TrainConfig(base=tmp_path, data=[data], output=tmp_path / "out", eval_examples=0, max_seq_len=145)
    with caplog.at_level("WARNING"):
        train, _ = build_examples(cfg, tok, lambda: pytest.fail("the base ran"), tmp_path / "c", torch.float32)
    assert sorted(_masked_text(tok, ex) for ex in train) == sorted(
        f"<think>\n\n</think>\n\n{answer}<|im_end|>" for answer in ("word " * 20, "A1.", "Yes 1."))
    assert "left out 1 example whose answer starts past --max-seq-len 145 (a conversation the chat template " \
           "renders answer by answer gives an example per answer" in caplog.text, caplog.text


def test_an_answer_partly_past_max_seq_len_trains_up_to_it_answer_by_answer(tmp_path):
    """A conversation Qwen3's template trains answer by answer: an answer starting within --max-seq-len but running
    past it trains up to the limit (its cut tokens counted), only one starting past it is left out."""
    from redrafter_trt.train.data import encode_answers

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = QWEN3_THINK
    conv = conversation_of({"messages": [{"role": "user", "content": "Q?"},
                                         {"role": "assistant", "content": "word " * 20},
                                         {"role": "user", "content": "More?"},
                                         {"role": "assistant", "content": "Yes."}]})
    (whole, _), _ = encode_answers(tok, conv, 1000)
    assert whole.mask.index(True) < 80 < len(whole.ids)
    [ex], past = encode_answers(tok, conv, 80)
    assert past == 1 and ex.ids == whole.ids[:80] and sum(ex.mask) > 0
    assert ex.cut == sum(whole.mask) - sum(ex.mask) > 0


# QWEN3_THINK writing the last answer's thinking from `reasoning_content`, as Qwen3's template does
QWEN3_REASONING = QWEN3_THINK.replace("'<|im_start|>assistant\n<think>\n\n</think>\n\n'",
                                      "'<|im_start|>assistant\n<think>\n' + (m.reasoning_content or '') + "
                                      "'\n</think>\n\n'")


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning", "thinking"])
def test_an_answers_thinking_field_reaches_the_chat_template(tmp_path, key):
    """Qwen3 data sets keep an answer's thinking in `reasoning_content` (vLLM's newer answers: `reasoning`), which
    Qwen3's template writes into the answer's <think> block. It was dropped: the answer trained after an empty
    block, its thinking never learnt, without a word. It reaches the template under both names, as serve gives a
    request's (a tool call's too); one that is no string refuses the record."""
    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = QWEN3_REASONING
    ask = {"role": "user", "content": "Q"}
    conv = conversation_of({"messages": [ask, {"role": "assistant", "content": "R", key: "T"}]})
    assert _masked_text(tok, encode(tok, conv, 1000)) == "<think>\nT\n</think>\n\nR<|im_end|>"
    call = {"role": "assistant", "content": None, key: "T",
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert conversation_of({"messages": [ask, call]}).messages[1]["reasoning_content"] == "T"
    with pytest.raises(ValueError, match=rf"`messages` message 2 has {key} 5: write the answer's thinking as a "
                                         rf"string, or leave it out"):
        conversation_of({"messages": [ask, {"role": "assistant", "content": "R", key: 5}]})


# gpt-oss's chat template, reduced to where it reads an answer's thinking: `message.thinking`, written in the
# analysis channel of the last answer (and of a tool call), where the message has the key at all
GPT_OSS_THINKING = ("{% for m in messages %}{% if m.role == 'assistant' %}{{ '<|start|>assistant' }}"
                    "{% if 'thinking' in m %}{{ '<|channel|>analysis<|message|>' + m.thinking + "
                    "'<|end|><|start|>assistant' }}{% endif %}{{ '<|channel|>final<|message|>' + m.content + "
                    "'<|im_end|>' }}{% else %}{{ '<|start|>' + m.role + '<|message|>' + m.content + '<|end|>' }}"
                    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|start|>assistant' }}{% endif %}")


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning", "thinking"])
def test_a_template_reading_thinking_gets_the_answers_thinking_under_any_key(tmp_path, key):
    """gpt-oss's chat template reads an answer's thinking from `message.thinking` (its data sets keep it there), and
    Qwen3's from `reasoning_content`: a data set's `thinking` was dropped (the answer trained without it), and a
    Qwen3 data set's reached no gpt-oss template. Each key's thinking reaches the template under every name; two
    different thoughts under two keys of one message refuse the record (which to train is the data's to say), and
    serve refuses such a message naming the second key."""
    from redrafter_trt.serve_errors import RequestError
    from redrafter_trt.serve_request import _messages

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = GPT_OSS_THINKING
    ask = {"role": "user", "content": "Q"}
    conv = conversation_of({"messages": [ask, {"role": "assistant", "content": "R", key: "T"}]})
    assert _masked_text(tok, encode(tok, conv, 1000)) == ("<|channel|>analysis<|message|>T<|end|><|start|>assistant"
                                                          "<|channel|>final<|message|>R<|im_end|>")
    unthought = conversation_of({"messages": [ask, {"role": "assistant", "content": "R"}]})
    assert _masked_text(tok, encode(tok, unthought, 1000)) == "<|channel|>final<|message|>R<|im_end|>"
    alike = {"role": "assistant", "content": "R", "reasoning_content": "T", "thinking": "T"}  # vLLM's two names
    assert conversation_of({"messages": [ask, alike]}).messages[1]["thinking"] == "T"
    blank_beside = {"role": "assistant", "content": "R", "reasoning_content": "", "thinking": "T"}  # a client's ""
    assert conversation_of({"messages": [ask, blank_beside]}).messages[1]["reasoning_content"] == "T"
    _messages([ask, blank_beside])
    two = {"role": "assistant", "content": "R", "reasoning_content": "T", "thinking": "U"}
    with pytest.raises(ValueError, match=r"^`messages` message 2 has two thoughts, reasoning_content 'T' and thinking "
                                         r"'U': keep the answer's thinking under one of them$"):
        conversation_of({"messages": [ask, two]})
    with pytest.raises(RequestError, match=r'"messages"\[1\]: "reasoning_content" and "thinking" hold two '
                                           r'different thoughts') as e:
        _messages([ask, two])
    assert e.value.param == "messages.[1].thinking"


# Qwen3's template as it writes a tool-calling loop: an answer after the last user turn opens with a <think> block
# when it is the last one or has thinking of its own (`reasoning_content`)
QWEN3_LOOP = ("{% set ns = namespace(last=0) %}{% for m in messages %}{% if m['role'] == 'user' %}"
              "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{% for m in messages %}"
              "{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
              "{% if loop.index0 > ns.last and (loop.last or m.reasoning_content) %}"
              "{{ '<think>\n' + (m.reasoning_content or '') + '\n</think>\n\n' }}{% endif %}{{ m['content'] }}"
              "{% for c in m.tool_calls or [] %}{{ '<tool_call>' + c.function.name + '</tool_call>' }}{% endfor %}"
              "{{ '<|im_end|>\n' }}{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
              "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_a_tool_calling_loop_whose_answers_keep_their_thinking_trains_turn_by_turn(tmp_path):
    """Qwen3's template writes the thinking of every answer since the last user turn that has it: a tool-calling
    loop whose answers keep their `reasoning_content` renders turn by turn, and trains each answer with its thinking
    (it was left out, the thinking dropped, as one without thinking still is: the last answer alone gets a block)."""
    from redrafter_trt.train.data import rendering

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = QWEN3_LOOP
    call = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
    turns = [{"role": "user", "content": "Q"},
             {"role": "assistant", "content": None, "reasoning_content": "T", "tool_calls": [call]},
             {"role": "tool", "content": "4"}, {"role": "assistant", "content": "R", "reasoning_content": "U"}]
    conv = conversation_of({"messages": turns})
    assert not rendering(tok, conv).by_answer
    assert _masked_text(tok, encode(tok, conv, 1000)) == ("<think>\nT\n</think>\n\n<tool_call>f</tool_call><|im_end|>"
                                                          "<think>\nU\n</think>\n\nR<|im_end|>")
    unthought = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in turns]
    assert rendering(tok, conversation_of({"messages": unthought})).by_answer


@pytest.mark.parametrize("template", [5, "{% for m in messages %}{{ m.content }", "{{ foo.bar }}"],
                         ids=["not text", "broken Jinja", "undefined"])
def test_a_chat_template_that_renders_nothing_is_named_not_each_record(tmp_path, template):
    """A chat template that is not text was a TypeError traceback from train (run said one line), and broken Jinja
    was blamed on the first record ('fix or remove that record'), which every record would have been in turn; both
    now name the template. A template that refuses one record still names that record."""
    tok = make_tokenizer(tmp_path / "tok")
    conv = conversation_of({"question": "Q", "answer": "A"}, "d.jsonl line 1")
    tok.chat_template = template
    for call in (lambda: encode(tok, conv, 1000), lambda: prompt_ids(tok, conv)):
        with pytest.raises(ConfigError, match=r"^the base's chat template does not render \(.+\): fix or re-download "
                                              r"the base's chat template \(tokenizer_config.json's chat_template, or "
                                              r"chat_template.jinja\)$"):
            call()
    tok.chat_template = "{% if messages[0]['content'] == 'Q' %}{{ raise_exception('no Q') }}{% endif %}" + CHATML
    with pytest.raises(ConfigError, match=r"^d\.jsonl line 1: the base's chat template refuses it \(no Q\): fix or "
                                          r"remove that record$"):
        encode(tok, conv, 1000)


def test_a_template_whose_generation_prompt_opens_a_think_block_points_to_distill(tmp_path):
    """DeepSeek-R1's distilled Llama/Qwen2 templates open the generation prompt with <think> that no rendered answer
    has: every record with an answer is refused, and the fixes named (drop the system message or later turns)
    did not help; --distill, which renders only the prompt, does."""
    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = CHATML.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'")
    conv = conversation_of({"question": "Q", "answer": "A"}, "d.jsonl line 1")
    with pytest.raises(ConfigError, match=r"with --distill \(it renders only the prompt\)$"):
        encode(tok, conv, 1000)
    assert tok.decode(prompt_ids(tok, conv)).endswith("<|im_start|>assistant\n<think>\n")


def test_unusable_records_are_skipped_with_a_warning(tmp_path, caplog):
    """Public ShareGPT dumps hold records with nothing to train on; one of them once refused the whole file."""
    path = _sharegpt(tmp_path, [("human", "Q"), ("gpt", "A")], [], [("gpt", "only the bot")],
                     [("human", "Q"), ("critic", "{}")], [("human", None)], [("human", ["a", "b"])])
    with caplog.at_level("WARNING"):
        (conv,) = read_conversations(path)
    assert conv.messages[0]["content"] == "Q"
    assert f"{path}: skipped 5 of 6 records with nothing to train on: " in caplog.text
    assert "(1 record, the first at record 2 of its JSON list)" in caplog.text
    path.write_text(json.dumps([{"conversations": []}, {"text": "pretraining text"}]))
    with pytest.raises(ConfigError, match=r"holds no usable record: `conversations` must .* \(1 record, the first at "
                                          r"record 1 of its JSON list\); no prompt"):
        read_conversations(path)


def test_skipped_records_are_counted_by_reason_each_with_its_first_line(tmp_path, caplog):
    """A file of malformed records (ShareGPT turns of unknown roles, lines that are no conversation) was refused with
    the first record's reason alone, and a file of some said how many were skipped and the first one's reason: which
    fault is worth fixing (a role to rename across the file) was not said. Each reason is named with its count and its
    first record, most common first."""
    bot = {"conversations": [{"from": "human", "value": "Q"}, {"from": "bot", "value": "A"}]}
    lines = [bot, {"text": "pretraining text"}, bot, {"conversations": [{"from": "gpt", "value": "A"}]}, bot]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(ConfigError) as e:
        read_conversations(path)
    (said,) = str(e.value).splitlines()
    role = "`conversations` has a message with role 'bot': expected human/user, gpt/assistant or system"
    assert said.startswith(f"data file {path} holds no usable record: {role} (3 records, the first at line 1); no "
                           f"prompt: "), said
    assert said.endswith("(1 record, the first at line 2); `conversations` has no human/user message (1 record, the "
                         "first at line 4): fix the records, or pass another file"), said
    path.write_text(path.read_text() + json.dumps({"prompt": "Q", "answer": "A"}) + "\n")
    with caplog.at_level("WARNING"):
        (conv,) = read_conversations(path)
    assert f"{path}: skipped 5 of 6 records with nothing to train on: {role} (3 records, the first at line 1); no " \
           f"prompt: " in caplog.text, caplog.text


def test_one_fault_across_a_file_is_one_reason_its_values_cut(tmp_path):
    """Reasons were grouped by their whole text, message numbers and bad values included: a file whose records each
    lacked a role in another message said six reasons of 1 record, and one whose records held a 6 KB dict as their
    content was refused in one line of 36,850 characters. A reason is grouped without its numbers and values; the
    first record's is said, each value in it cut, and the line stays short."""
    turns = [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]
    lines = [{"conversations": turns * n + [{"value": "x"}]} for n in range(1, 9)]
    lines += [{"messages": [{"role": "user", "content": {"body": f"q{i} " + "w " * 3000}},
                            {"role": "assistant", "content": "A"}]} for i in range(10)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(ConfigError) as e:
        read_conversations(path)
    (said,) = str(e.value).splitlines()
    assert "(10 records, the first at line 9)" in said and "(8 records, the first at line 1)" in said, said
    assert "`conversations` message 3 has no `from` or `role`" in said and "other reason" not in said, said
    assert "`messages` has a 'user' message whose `value`/`content` is {'body': 'q0 w w w" in said, said
    assert len(said) < 1000, len(said)


def test_records_are_numbered_from_1_and_every_key_is_named(tmp_path):
    """As `run --input-file` numbers them; the refusal names every key train reads, `messages` and answers too."""
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "x"}]))
    with pytest.raises(ConfigError, match=r"no prompt: expected one of the keys prompt, turns, question, instruction, "
                                          r"query, conversations, messages, conversation \(an answer under answer, "
                                          r"response, output, completion\) \(1 record, the first at record 1 of its "
                                          r"JSON list\)"):
        read_conversations(path)


@pytest.mark.parametrize("text", ['{"prompt": "p", "answer": "a"}\n', '[{"prompt": "p", "answer": "a"}]'])
def test_a_byte_order_mark_is_read_past(tmp_path, text):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    (conv,) = read_conversations(path)
    assert conv.messages[1] == {"role": "assistant", "content": "a"}


def test_a_byte_that_is_not_utf8_is_located_by_line(tmp_path):
    """A Latin-1 record deep in a large jsonl was named only by its byte offset."""
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "a", "answer": "b"}\n' * 2 + '{"prompt": "caf\u00e9", "answer": "b"}\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))} is not UTF-8 text \(line 3, byte 77\): save it as UTF-8"):
        read_conversations(path)


def test_duplicate_conversations_are_dropped_before_the_split(tmp_path, caplog):
    """The same file passed twice (or a copied record) put copies on both sides of the held-out split."""
    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import read_all

    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "answer": "a"}) + "\n" for i in [0, 1, 2, 1]))
    with caplog.at_level("WARNING"):
        convs = read_all(TrainConfig(base=tmp_path, data=[path, path], output=tmp_path / "out"))
    assert sorted(c.messages[0]["content"] for c in convs) == ["q0", "q1", "q2"]
    assert "dropped 5 duplicate conversations of 8" in caplog.text


def test_a_conversation_beginning_a_longer_one_is_trained_in_it_alone(tmp_path, caplog):
    """A data set of serve's logs (each request repeats the turns before it) or of a tree's paths holds chats whose
    turns all begin a longer one: each of their examples is the longer chat's (an answer sees the same turns before
    it), so their answers were trained once per chat they begin. Only the longest of each such chain is kept; a chat
    that branches off (another answer, another speaker) stays."""
    from transformers import AutoTokenizer

    from test_prompts import OPENAI_TOOLS

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples, read_all

    turns = [{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "2."},
             {"role": "user", "content": "And 2 + 2?"}, {"role": "assistant", "content": "4."},
             {"role": "user", "content": "And 3 + 3?"}, {"role": "assistant", "content": "6."}]
    other = [turns[0], {"role": "assistant", "content": "Two."}, turns[2], turns[3]]
    hello = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    records = [turns[:2], turns[:4], turns, turns[:5], other, [turns[0], turns[1] | {"name": "bot"}],
               hello, hello + OPENAI_TOOLS["messages"][1:]]  # a longer chat calling tools this template cannot write
    path = tmp_path / "logs.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in records))
    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    cfg = TrainConfig(base=base, data=[path], output=tmp_path / "out", cache_dir=tmp_path / "c", eval_examples=0,
                      max_seq_len=256)
    with caplog.at_level("WARNING"):
        train, _ = build_examples(cfg, tok, None, tmp_path / "c", torch.float32)
    assert "dropped 3 conversations (of 7 with an answer) whose turns all begin a longer one" in caplog.text
    answers = [tok.decode([t for t, m in zip(ex.ids, ex.mask) if m]) for ex in train]
    # each answer once (the first began 4 chats); the branches (another answer, another speaker's); and the beginning
    # of a chat left out
    assert sorted(answers) == sorted(["2.<|im_end|>4.<|im_end|>6.<|im_end|>", "Two.<|im_end|>4.<|im_end|>",
                                      "2.<|im_end|>", "Hello.<|im_end|>"]), answers
    # prompts to distill are no conversations' beginnings: each is answered by the base
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"messages": m}) + "\n" for m in ([turns[0]], [turns[0], turns[2]])))
    assert len(read_all(TrainConfig(base=base, data=[prompts], output=tmp_path / "o", distill=True), tok)) == 2
    # a chat going on in the role it ended in begins none: a template refusing two answers in a row joins them, so
    # the end of turn after the first is trained in the shorter chat alone (a review)
    tok.chat_template = STRICT
    path.write_text("".join(json.dumps({"messages": m}) + "\n"
                            for m in (hello, hello + [{"role": "assistant", "content": "How can I help?"}])))
    train, _ = build_examples(cfg, tok, None, tmp_path / "c", torch.float32)
    assert sorted(tok.decode([t for t, m in zip(ex.ids, ex.mask) if m]) for ex in train) == \
        sorted(["Hello.<|im_end|>", "Hello.\n\nHow can I help?<|im_end|>"])


def test_max_examples_counts_the_conversations_trained(tmp_path, caplog):
    """--max-examples N took N conversations before those whose turns all begin a longer one were dropped (and those
    with no answer left out), so serve's logs (each request repeating the turns before it) trained fewer than N though
    they held N chats and more. N counts the conversations trained: read in the seeded shuffle until N are kept, a
    beginning dropped for a longer one among them alone (one whose longer conversation lies past the N trains as it
    is, once)."""
    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples

    def chat(c):
        return [turn for t in range(3) for turn in ({"role": "user", "content": f"Q{c}.{t}"},
                                                      {"role": "assistant", "content": f"A{c}.{t}"})]

    records = [chat(c)[:n] for c in range(4) for n in (2, 4, 6)] + [[{"role": "user", "content": f"P{p}"}]
                                                                     for p in range(3)]
    path = tmp_path / "logs.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in records))
    tok = make_tokenizer(tmp_path / "tok")
    for seed in range(6):
        cfg = TrainConfig(base=tmp_path, data=[path], output=tmp_path / "out", max_examples=3, eval_examples=0,
                          max_seq_len=1000, seed=seed)
        train, _ = build_examples(cfg, tok, None, tmp_path / "c", torch.float32)
        answers = [_masked_text(tok, ex) for ex in train]
        assert len(answers) == 3 and len({a[1] for a in answers}) == 3, (seed, answers)  # 3 chats, each once
    with caplog.at_level("WARNING"):
        train, _ = build_examples(dataclasses.replace(cfg, max_examples=None), tok, None, tmp_path / "c",
                                  torch.float32)
    assert sorted(_masked_text(tok, ex) for ex in train) == [
        f"A{c}.0<|im_end|>A{c}.1<|im_end|>A{c}.2<|im_end|>" for c in range(4)]
    assert "dropped 8 conversations (of 12 with an answer) whose turns all begin a longer one" in caplog.text


def test_conversations_of_other_speakers_are_no_duplicates(tmp_path):
    """A message's `name` reaches the chat template (a template writing it renders another conversation): records
    alike but for who speaks are kept, each once."""
    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import read_all

    path = tmp_path / "named.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "hi"} | name,
                                                     {"role": "assistant", "content": "hello"}]}) + "\n"
                            for name in [{"name": "ann"}, {"name": "bob"}, {}, {"name": "ann"}]))
    convs = read_all(TrainConfig(base=tmp_path, data=[path], output=tmp_path / "out"))
    assert sorted(c.messages[0].get("name", "") for c in convs) == ["", "ann", "bob"]


def test_answers_of_other_thinking_are_no_duplicates(tmp_path):
    """An answer's thinking (`reasoning_content`) reaches the chat template (Qwen3's writes it in the <think> block it
    trains): records alike but for an answer's thinking (sampled reasoning to one answer) were dropped as
    duplicates, the first's thinking alone trained. Each is kept, once."""
    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import read_all

    path = tmp_path / "thought.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "2+2?"},
                                                     {"role": "assistant", "content": "4"} | thought]}) + "\n"
                            for thought in [{"reasoning_content": "add"}, {"reasoning_content": "count"}, {},
                                            {"reasoning_content": "add"}]))
    convs = read_all(TrainConfig(base=tmp_path, data=[path], output=tmp_path / "out"))
    assert sorted(c.messages[1].get("reasoning_content", "") for c in convs) == ["", "add", "count"]


def test_a_prompt_with_several_answers_is_held_out_whole(tmp_path):
    """Two answers to one prompt (sampled completions) were two conversations, and the held-out split could put one on
    each side: the held-out accuracy then scored a prompt the drafter was trained on."""
    from transformers import AutoTokenizer

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"{i + 1}{end}"})
                               for i in range(10) for end in (".", "!")))
    cfg = TrainConfig(base=base, data=[data], output=tmp_path / "out", cache_dir=tmp_path / "c", eval_examples=3)
    cfg.validate()
    train, held = build_examples(cfg, tok, lambda: pytest.fail("the base ran"), tmp_path / "c", torch.float32)

    def prompt(ex):
        return tok.decode(ex.ids[: ex.mask.index(True)])

    assert len(held) >= 3 and len(train) + len(held) == 20
    assert not {prompt(ex) for ex in held} & {prompt(ex) for ex in train}


def test_a_data_set_of_few_prompts_is_not_held_out_whole():
    """Every conversation sharing a prompt with the first 5% went to the held-out set: 5 prompts x 20 sampled answers
    (in the shuffled order, the first 5 conversations of 5 prompts) held out all 100, and one prompt's 40 answers all
    40, which train refused as '0 training conversations ... for 1 torchrun ranks: ... run 1 ranks or fewer'. Whole
    prompts are held out until they hold the 5%, never every prompt."""
    from redrafter_trt.train.dataset import split, split_by_prompt

    def qa(prompts, answers):
        return [conversation_of({"question": f"Q{p}", "answer": f"A{a}"}) for a in range(answers) for p in range(prompts)]

    def prompts(convs):
        return {c.messages[0]["content"] for c in convs}

    train, held = split_by_prompt(qa(5, 20), None)
    assert (len(train), len(held), prompts(held)) == (80, 20, {"Q0"})
    assert not prompts(train) & prompts(held)
    assert split_by_prompt(qa(1, 40), None) == (qa(1, 40), [])
    # two prompts of many answers: holding one out would take half the data from training
    assert split_by_prompt(qa(2, 50), None) == (qa(2, 50), [])
    # nor more than the 200 held out at most: 7 prompts of 300 answers held out 300
    assert split_by_prompt(qa(7, 300), None) == (qa(7, 300), [])
    unique = qa(100, 1)
    assert split_by_prompt(unique, None) == split(unique, None) == (unique[5:], unique[:5])
    train, held = split_by_prompt(qa(100, 2), 7)  # whole prompts: 4 of them
    assert (len(train), len(held), prompts(held)) == (192, 8, {"Q0", "Q1", "Q2", "Q3"})


def test_the_held_out_set_is_at_most_200_and_never_every_prompt():
    """Without --eval-examples, 5% is held out, at most HELD_OUT_MOST; whole prompts held out never take every
    prompt, whatever --eval-examples asks (3 prompts for 10: 2 held out, 1 left to train)."""
    from redrafter_trt.train.dataset import HELD_OUT_MOST, split, split_by_prompt

    assert len(split(list(range(1000)), None)[1]) == 50
    assert len(split(list(range(5000)), None)[1]) == HELD_OUT_MOST == 200
    convs = [conversation_of({"question": f"Q{p}", "answer": "A"}) for p in range(3)]
    assert split_by_prompt(convs, 10) == (convs[2:], convs[:2])


def test_the_held_out_split_follows_the_seed(tmp_path):
    """The conversations are shuffled under --seed before the held-out ones are taken: the same seed, the same split;
    another, other conversations held out (of the same whole)."""
    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import read_all, split_by_prompt

    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": f"Q{i}?", "answer": f"A{i}."}) + "\n" for i in range(40)))

    def held(seed):
        convs = read_all(TrainConfig(base=tmp_path, data=[data], output=tmp_path / "out", seed=seed))
        train, out = split_by_prompt(convs, 4)
        assert sorted(c.messages[0]["content"] for c in train + out) == sorted(f"Q{i}?" for i in range(40))
        return [c.messages[0]["content"] for c in out]

    assert held(1) == held(1)
    assert held(1) != held(2) and held(2) != held(0)


def test_a_prompt_of_many_answers_is_not_held_out_for_a_few(tmp_path):
    """Whole prompts were held out in order until they held the 5%: one prompt of 1000 sampled answers beside 10 of
    one answer, first in any shuffle, held out 1000 of the 1010 conversations for a target of 50, and the drafter
    trained on 10. A prompt of more answers than the target is now passed over while smaller ones fill it (the 10);
    it is held out only when every prompt is (5 prompts x 20 answers: one prompt, as before)."""
    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import read_all, split_by_prompt

    data = tmp_path / "sampled.jsonl"
    data.write_text("".join(json.dumps({"question": "Tell me a story.", "answer": f"Story {i}."}) + "\n"
                            for i in range(1000))
                    + "".join(json.dumps({"question": f"Q{i}?", "answer": f"A{i}."}) + "\n" for i in range(10)))
    for seed in range(3):
        convs = read_all(TrainConfig(base=tmp_path, data=[data], output=tmp_path / "out", seed=seed))
        train, held = split_by_prompt(convs, None)
        assert (len(train), len(held)) == (1000, 10)
        assert {c.messages[0]["content"] for c in held} == {f"Q{i}?" for i in range(10)}
    big = [conversation_of({"question": "Big", "answer": f"A{a}"}) for a in range(60)]
    small = [conversation_of({"question": f"Q{p}", "answer": "A"}) for p in range(3)]
    assert split_by_prompt(big + small, 4) == (big, small)  # all 3 in place of the 60 answers
    assert split_by_prompt(big[:8] + small[:1] + big[8:] + small[1:], 5) == (big, small)


def test_hidden_state_progress_stops_at_the_total(tmp_path):
    """compute_hidden reported 63 of 4 examples: a batch's row count past the end."""
    from transformers import AutoModelForCausalLM

    from redrafter_trt.train.features import build_features

    model = AutoModelForCausalLM.from_pretrained(make_hf(tmp_path / "base", "llama", vocab_size=128)).eval()
    examples = [Example(tuple(range(1, n)), (False,) + (True,) * (n - 2)) for n in (6, 7, 8, 9)]
    seen = []
    model.model.register_forward_hook(lambda *a: seen.append("forward"))
    build_features(examples, 2, tmp_path / "cache", "base", lambda: model, on_batch=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 4), "forward", (4, 4)]  # the bar drawn before the first batch, as distill's


def test_the_distill_bar_starts_before_the_first_batch(tmp_path):
    """The distilling bar was drawn only once the first batch of answers was done (minutes of a large base on a CPU
    with no bar), and its rate and ETA then left that batch's time out (half the time left, after the second)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redrafter_trt.train.distill import distill

    base = make_chat_base(tmp_path / "base")
    tok, seen = AutoTokenizer.from_pretrained(base), []

    def load():
        model = AutoModelForCausalLM.from_pretrained(base).eval()
        model.model.register_forward_hook(lambda *a: seen.append("forward") if seen[-1:] != ["forward"] else None)
        return model

    prompts = [[1, 5 + i, 9] for i in range(5)]
    distill(load, tok, prompts, tmp_path / "c", max_new_tokens=3, batch_size=2,
            on_batch=lambda d, t: seen.append((d, t)))
    assert seen == [(0, 5), "forward", (2, 5), "forward", (4, 5), "forward", (5, 5)]


@pytest.mark.parametrize("other_host", [False, True])
def test_runs_sharing_a_hidden_state_cache_write_files_of_their_own(tmp_path, monkeypatch, other_host):
    """Two runs on the same reference answers (two drafters for one base at once) wrote the same
    `hidden-KEY.partial`: the one finishing second found it renamed away by the first and failed at the end of its
    teacher-forced pass. The same for a run on another host sharing the cache, whose writing the chunk removed this
    one's partial of it by process id (none on that host)."""
    import os

    from transformers import AutoModelForCausalLM

    from redrafter_trt import output
    from redrafter_trt.train import chunks, features

    if other_host:
        monkeypatch.setattr(output, "_alive", lambda pid: False)

    model = AutoModelForCausalLM.from_pretrained(make_hf(tmp_path / "base", "llama", vocab_size=128)).eval()
    examples = [Example(tuple(range(1, n)), (False,) + (True,) * (n - 2)) for n in (6, 7, 8, 9)]
    real, pid = chunks.write_safetensors_stable, os.getpid()

    def other_run_finishes_meanwhile(path, tensors, *a, **k):
        real(path, tensors, *a, **k)
        if os.getpid() == pid:  # the other process (its own pid) writes and renames while this one writes
            monkeypatch.setattr(os, "getpid", lambda: pid + 1)
            features.build_features(examples, 2, tmp_path / "cache", "base", lambda: model)
            monkeypatch.setattr(os, "getpid", lambda: pid)

    monkeypatch.setattr(chunks, "write_safetensors_stable", other_run_finishes_meanwhile)
    feats = features.build_features(examples, 2, tmp_path / "cache", "base", lambda: model)
    folder = features.hidden_folder(tmp_path / "cache", "base", examples)
    assert list((tmp_path / "cache").iterdir()) == [folder]
    assert [f.name for f in folder.iterdir() if f.name != chunks.WRITING] == [features.chunk_name(0, 1)]
    assert feats.hidden.shape == (len(feats.anchors), 64)


def _dead_pid() -> int:
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_a_killed_runs_partial_cache_file_is_removed_by_the_next_write_and_a_live_ones_stays(tmp_path, caplog):
    """A kill -9 (the OOM killer) while the hidden states were written left `.hidden-KEY.safetensors.partial-PID`
    (~100 GB for an 8B base) that no run removed. The next run writing that file removes it, saying so; the partial of
    a process still running (another torchrun rank, a concurrent run) stays. The same for a chunk's partial."""
    import logging
    import os

    from transformers import AutoModelForCausalLM

    from redrafter_trt.train import chunks, features

    model = AutoModelForCausalLM.from_pretrained(make_hf(tmp_path / "base", "llama", vocab_size=128)).eval()
    examples = [Example(tuple(range(1, n)), (False,) + (True,) * (n - 2)) for n in (6, 7, 8, 9)]
    cache = tmp_path / "cache"
    folder = features.hidden_folder(cache, "base", examples)
    folder.mkdir(parents=True)
    name = features.chunk_name(0, 1)
    killed = folder / f".{name}.partial-{_dead_pid()}"
    killed.write_bytes(b"x" * 1000)
    live = folder / f".{name}.partial-{os.getppid()}"
    live.write_bytes(b"y")
    single = cache / f".hidden-{features.cache_key('base', examples)}.safetensors.partial-{_dead_pid()}"
    single.write_bytes(b"x" * 1000)  # a version before session 44 wrote the pass in one file
    with caplog.at_level(logging.WARNING, logger="redrafter_trt.output"):
        features.build_features(examples, 2, cache, "base", lambda: model)
    assert sorted(f.name for f in folder.iterdir() if f.name != chunks.WRITING) == sorted([name, live.name])
    assert not single.exists()
    assert any(str(killed) in r.getMessage() and "freed" in r.getMessage() for r in caplog.records)


def test_a_killed_runs_partial_cache_file_under_another_key_is_removed_by_the_next_write(tmp_path):
    """The run after an out-of-memory kill mid-write usually has fewer examples (another key): the killed run's
    `.hidden-KEY.safetensors.partial-PID` was swept only by a run writing that same key, so it stayed for good."""
    from transformers import AutoModelForCausalLM

    from redrafter_trt.train import features

    model = AutoModelForCausalLM.from_pretrained(make_hf(tmp_path / "base", "llama", vocab_size=128)).eval()
    examples = [Example(tuple(range(1, n)), (False,) + (True,) * (n - 2)) for n in (6, 7)]
    cache = tmp_path / "cache"
    killed = features.hidden_folder(cache, "base", examples + examples) / f".{features.chunk_name(3, 4)}.partial-{_dead_pid()}"
    killed.parent.mkdir(parents=True)
    killed.write_bytes(b"x" * 1000)
    other = cache / f".teacher-0123.safetensors.partial-{_dead_pid()}"  # not this writer's: left to its own
    other.write_bytes(b"x")
    features.build_features(examples, 2, cache, "base", lambda: model)
    assert not killed.exists() and other.exists()


def test_a_sweep_leaves_the_chunk_another_host_is_writing(tmp_path, monkeypatch):
    """Partials are swept by process id, which names a process of this host only: a torchrun rank on another node
    sharing the cache (or another machine's run) writing a chunk looked dead, and the pass that rank 0 starts on its
    held-out examples, as the other ranks write their last chunks, deleted it: that rank failed in its rename
    (FileNotFoundError) and the job ended. A folder a run is writing into is locked; the others' sweeps leave it."""
    from transformers import AutoModelForCausalLM

    from redrafter_trt import output
    from redrafter_trt.train import chunks, features

    model = AutoModelForCausalLM.from_pretrained(make_hf(tmp_path / "base", "llama", vocab_size=128)).eval()
    cache, mine, held = tmp_path / "cache", _sums((6, 7, 8)), _sums((9, 10))
    monkeypatch.setattr(output, "_alive", lambda pid: False)  # every writer on another host: its id is none here
    real, partials = chunks.write_safetensors_stable, []

    def held_out_pass_starts_meanwhile(path, tensors, metadata):
        real(path, tensors, metadata)
        if not partials:  # rank 0, on another node, begins its held-out pass while this chunk is being written
            partials.append(path)
            features.build_features(held, 2, cache, "base", lambda: model)
            assert path.exists()

    monkeypatch.setattr(chunks, "write_safetensors_stable", held_out_pass_starts_meanwhile)
    feats = features.build_features(mine, 2, cache, "base", lambda: model)
    chunk = features.hidden_folder(cache, "base", mine) / features.chunk_name(0, 1)
    assert chunk.is_file() and feats.hidden.shape == (len(feats.anchors), 64)
    assert (features.hidden_folder(cache, "base", held) / features.chunk_name(0, 1)).is_file()



def test_a_chunk_leaves_the_partial_another_hosts_run_of_the_same_process_id_is_writing(tmp_path):
    """Containers number their processes alike (an entry point is process 1 on every node): two runs on the same
    reference answers on two nodes sharing the cache wrote a chunk under one partial name, `.NAME.partial-PID`, each
    truncating the other's file and renaming it away (the one finishing second failed in its rename, or a chunk took
    its name holding both runs' bytes). A partial's name is now this write's own."""
    import os

    from redrafter_trt.train import chunks

    path = tmp_path / chunks.chunk_name(0, 1)
    theirs = tmp_path / f".{path.name}.partial-{os.getpid()}"
    theirs.write_bytes(b"another host's chunk, half written")
    chunks.write_chunk(path, {"rows": torch.arange(2), "hidden": torch.ones(2, 3)}, {})
    assert theirs.read_bytes() == b"another host's chunk, half written"
    assert torch.equal(chunks.read_chunk(path, torch.arange(2), {})[0]["hidden"], torch.ones(2, 3))

def _sums(lengths) -> list[Example]:
    return [Example(tuple(range(1, n)), (False,) + (True,) * (n - 2)) for n in lengths]


def test_an_interrupted_teacher_forced_pass_goes_on_after_its_last_whole_chunk(tmp_path, monkeypatch):
    """The teacher-forced pass (hours and ~100 GB for an 8B base) was written only once it had finished: a Ctrl-C, a
    SIGTERM or a lost node in it lost everything, and the rerun started it from zero. Its chunks are now written as
    they finish; a rerun computes only the chunks left, in the batches an uninterrupted run has, and ends with the
    same cache, byte for byte."""
    from transformers import AutoModelForCausalLM

    from redrafter_trt.train import chunks, features

    monkeypatch.setattr(features, "TOKEN_BUDGET", 20)  # 1 to 3 examples a batch
    monkeypatch.setattr(features, "CHUNK_TOKENS", 20)  # 2 batches a chunk, 4 chunks
    model = AutoModelForCausalLM.from_pretrained(make_hf(tmp_path / "base", "llama", vocab_size=128))
    model = model.to(torch.bfloat16).eval()  # where a row's hidden states depend on the rows batched with it
    forwards = []
    model.model.register_forward_hook(lambda *a: forwards.append(1))
    examples = _sums([6, 9, 7, 12, 8, 10, 6, 11, 9, 7, 8, 13])
    planned = features.plan(examples)
    assert len(planned) >= 4 and len(planned[2]) >= 2, planned
    whole = features.build_features(examples, 2, tmp_path / "whole", "base", lambda: model, dtype=torch.bfloat16)

    kept = sum(len(batch) for chunk in planned[:2] for batch in chunk)

    def interrupt(done, total):
        if done > kept:  # the first batch of the third chunk done
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        features.build_features(examples, 2, tmp_path / "cut", "base", lambda: model, on_batch=interrupt,
                                dtype=torch.bfloat16)
    folder = features.hidden_folder(tmp_path / "cut", "base", examples)
    assert sorted(f.name for f in folder.iterdir() if f.name != chunks.WRITING) == \
        [features.chunk_name(c, len(planned)) for c in (0, 1)]

    forwards.clear()
    seen = []
    resumed = features.build_features(examples, 2, tmp_path / "cut", "base", lambda: model,
                                      on_batch=lambda d, t: seen.append((d, t)), dtype=torch.bfloat16)
    assert len(forwards) == sum(len(chunk) for chunk in planned[2:])  # the chunks left only
    assert seen[0] == (kept, len(examples)) and seen[-1] == (len(examples), len(examples))
    assert torch.equal(resumed.hidden, whole.hidden) and resumed.hidden.dtype == torch.float16
    done = features.hidden_folder(tmp_path / "whole", "base", examples)
    assert {f.name: f.read_bytes() for f in folder.iterdir()} == {f.name: f.read_bytes() for f in done.iterdir()}
    forwards.clear()
    again = features.build_features(examples, 2, tmp_path / "cut", "base", lambda: pytest.fail("the base ran"),
                                    dtype=torch.bfloat16)
    assert torch.equal(again.hidden, whole.hidden)


def test_chunks_of_another_dtype_are_computed_again_another_devices_reused_saying_so(tmp_path, monkeypatch, caplog):
    """A chunk records what computed it. One of another dtype is computed again, saying so, byte for byte as one pass
    here writes it; one another device computed (another kind, or one described otherwise: a CPU emulating bfloat16)
    is reused, with a warning naming the devices (a whole pass made on a GPU, computed again on a CPU, would cost days
    for an 8B base, where the devices differ in rounding only); a chunk recording neither (written before session 45)
    is reused."""
    import logging
    import shutil

    from transformers import AutoModelForCausalLM

    from redrafter_trt.io import read_safetensors, write_safetensors
    from redrafter_trt.train import features
    from redrafter_trt.train.chunks import describe_device

    monkeypatch.setattr(features, "TOKEN_BUDGET", 20)
    monkeypatch.setattr(features, "CHUNK_TOKENS", 20)
    model = AutoModelForCausalLM.from_pretrained(make_hf(tmp_path / "base", "llama", vocab_size=128))
    model = model.to(torch.bfloat16).eval()
    forwards = []
    model.model.register_forward_hook(lambda *a: forwards.append(1))
    examples = _sums([6, 9, 7, 12, 8, 10, 6, 11, 9, 7, 8, 13])
    planned = features.plan(examples)
    whole = features.build_features(examples, 2, tmp_path / "whole", "base", lambda: model, dtype=torch.bfloat16)
    done = features.hidden_folder(tmp_path / "whole", "base", examples)
    folder = features.hidden_folder(tmp_path / "cut", "base", examples)
    shutil.copytree(done, folder)
    names = [features.chunk_name(c, len(planned)) for c in range(len(planned))]

    def computed_elsewhere(name, **recorded):  # other hidden states, as another device or dtype gives
        saved = read_safetensors(folder / name)
        write_safetensors(folder / name, {"rows": saved["rows"], "hidden": saved["hidden"] + 1},
                          {"base_id": "base", **recorded})
        return saved["rows"]

    gpu = computed_elsewhere(names[0], device="cuda", dtype="bfloat16")
    computed_elsewhere(names[1], device="cpu", dtype="float32")
    older = computed_elsewhere(names[2])
    other_cpu = computed_elsewhere(names[3], device="cpu", device_name="cpu emulating bfloat16", dtype="bfloat16")
    forwards.clear()
    with caplog.at_level(logging.WARNING):
        resumed = features.build_features(examples, 2, tmp_path / "cut", "base", lambda: model, dtype=torch.bfloat16)
    assert len(forwards) == len(planned[1])
    assert f"computed on cpu emulating bfloat16 and cuda, not {describe_device(torch.device('cpu'))}:" in caplog.text
    assert "with device" not in caplog.text
    assert "computed with dtype float32, this run computes with dtype bfloat16: computing it again" in caplog.text
    for kept in (gpu, older, other_cpu):
        assert torch.equal(resumed.hidden[kept], whole.hidden[kept] + 1)
        resumed.hidden[kept] = whole.hidden[kept]
    assert torch.equal(resumed.hidden, whole.hidden)
    assert (folder / names[1]).read_bytes() == (done / names[1]).read_bytes()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        features.build_features(examples, 2, tmp_path / "whole", "base", lambda: pytest.fail("the base ran"),
                                dtype=torch.bfloat16)
    assert "computed on" not in caplog.text


def test_a_chunk_past_float16_keeps_every_row_finite(tmp_path, monkeypatch):
    """A chunk whose hidden states pass float16's range is kept in float32, and the features are then float32."""
    from redrafter_trt.train import features

    monkeypatch.setattr(features, "TOKEN_BUDGET", 8)
    monkeypatch.setattr(features, "CHUNK_TOKENS", 1)
    examples = _sums([6, 7])

    class Big(torch.nn.Module):  # hidden states of 1e5 at the longest example's positions, 1 elsewhere
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))
            self.model = self

        def forward(self, input_ids, use_cache):
            scale = 1e5 if input_ids.shape[1] == 6 else 1.0
            return type("Out", (), {"last_hidden_state": torch.full((*input_ids.shape, 4), scale)})

    feats = features.build_features(examples, 2, tmp_path / "c", "base", Big)
    assert feats.hidden.dtype == torch.float32 and torch.isfinite(feats.hidden).all()
    assert feats.hidden.max() == 1e5 and feats.hidden.min() == 1.0
    reread = features.build_features(examples, 2, tmp_path / "c", "base", lambda: pytest.fail("the base ran"))
    assert torch.equal(reread.hidden, feats.hidden)


def test_hidden_states_an_earlier_version_cached_in_one_file_are_still_read(tmp_path):
    """Before session 44 the pass was cached in one `hidden-KEY.safetensors` (hours of an 8B base): still read."""
    from redrafter_trt.io import write_safetensors
    from redrafter_trt.train import features

    examples = _sums([6, 7])
    _, _, anchors, _ = flatten(examples, tail=4)
    hidden = torch.randn(len(anchors), 8).half()
    write_safetensors(tmp_path / f"hidden-{features.cache_key('base', examples)}.safetensors", {"hidden": hidden})
    feats = features.build_features(examples, 2, tmp_path, "base", lambda: pytest.fail("the base ran"))
    assert torch.equal(feats.hidden, hidden)


def test_a_killed_distill_runs_partial_batch_file_is_removed_by_the_next_distill(tmp_path, caplog):
    """Distilled batches are written under fresh names (`hidden-KEY-RANDOM.safetensors`), so what a killed run left
    half-written was never written again, nor removed: the next distill that answers prompts removes it."""
    import logging
    import os

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redrafter_trt.train.distill import distill

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    folder = tmp_path / "c"
    folder.mkdir()
    killed = folder / f".hidden-0123abcd-89abcdef.safetensors.partial-{_dead_pid()}"
    killed.write_bytes(b"x" * 1000)
    live = folder / f".hidden-0123abcd-01234567.safetensors.partial-{os.getppid()}"
    live.write_bytes(b"y")
    with caplog.at_level(logging.WARNING, logger="redrafter_trt.output"):
        distill(lambda: AutoModelForCausalLM.from_pretrained(base).eval(), tok, [[1, 5, 9]], folder,
                max_new_tokens=3, batch_size=1)
    assert not killed.exists() and live.exists()
    assert any(str(killed) in r.getMessage() for r in caplog.records)


def test_distill_answers_only_what_max_seq_len_keeps_and_cuts_long_prompts_in_the_middle(tmp_path, caplog):
    """--distill once generated --distill-max-new-tokens whatever room --max-seq-len left after the prompt (training
    then dropped the rest), and cut a long prompt from the left, dropping the template's head (the system turn)
    without a word."""
    from transformers import AutoTokenizer

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples
    from redrafter_trt.train.distill import read_cache

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"prompt": "Hi"}) + "\n" + json.dumps({"prompt": "x" * 80 + "END"}) + "\n")
    cfg = TrainConfig(base=base, data=[data], output=tmp_path / "out", cache_dir=tmp_path / "c", distill=True,
                      distill_max_new_tokens=40, max_seq_len=64, eval_examples=0)
    calls = []

    def load():
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base).eval()
        model.model.register_forward_hook(lambda *a: calls.append(1))
        return model

    short = prompt_ids(tok, Conversation(({"role": "user", "content": "Hi"},)), 1000)
    assert len(short) + 2 < cfg.max_seq_len < len(short) + cfg.distill_max_new_tokens
    with caplog.at_level("WARNING"):
        train, _ = build_examples(cfg, tok, load, tmp_path / "c", torch.float32)
    assert "1 of 2 prompts are longer than --max-seq-len 64 less 2 answer tokens: their middles were cut" in caplog.text
    assert "2 of 2 prompts leave less than --distill-max-new-tokens 40 answer tokens within --max-seq-len 64" \
        in caplog.text
    assert len(calls) <= cfg.max_seq_len - len(short)  # a prefill and a step per answer token that training keeps
    (answers,) = [f for f in (tmp_path / "c").iterdir() if f.name.startswith("distill-")]
    assert all(len(a) <= cfg.max_seq_len - len(short) for a, _ in read_cache(answers).values())
    text = {tok.decode(ex.ids[: ex.hidden_from + 1]) for ex in train}
    long = next(t for t in text if "x" in t)
    assert long.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nxxx")
    assert long.endswith("END<|im_end|>\n<|im_start|>assistant\n")
    assert all(len(ex.ids) <= cfg.max_seq_len for ex in train)


@pytest.mark.parametrize("distill", [False, True])
def test_more_torchrun_ranks_than_training_conversations_is_refused_on_every_rank(tmp_path, distill):
    """With 3 conversations and 4 ranks, rank 3 had none and failed alone saying to raise --max-seq-len (the
    others distilled on until torchrun stopped them); every rank now refuses, before the base runs, naming why."""
    from transformers import AutoTokenizer

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"{i}?", "answer": f"It is {i}."}) for i in range(3)))
    cfg = TrainConfig(base=base, data=[data], output=tmp_path / "out", cache_dir=tmp_path / "c", distill=distill,
                      eval_examples=0)
    cfg.validate()  # as train_drafter does: the default --max-seq-len fitted to the base
    for rank in range(4):
        with pytest.raises(ConfigError, match=r"^3 training conversations \(after the held-out ones\) for 4 torchrun "
                                              r"ranks: .* run 3 ranks or fewer$"):
            build_examples(cfg, tok, lambda: pytest.fail("the base ran"), tmp_path / "c", torch.float32, rank=rank,
                           world=4)


def test_torchrun_ranks_share_the_training_items_and_rank_0_alone_holds_the_held_out_ones():
    from redrafter_trt.train.dataset import rank_share

    train, held = list(range(7)), ["h0", "h1"]
    shares = [rank_share(train, held, rank, 2) for rank in range(2)]
    assert shares == [([0, 2, 4, 6], held), ([1, 3, 5], [])]  # disjoint, together all of them
    assert rank_share(train, held, 0, 1) == (train, held)


@pytest.mark.parametrize("distill", [False, True])
def test_each_torchrun_rank_builds_its_own_training_examples_and_rank_0_the_held_out_ones(tmp_path, monkeypatch,
                                                                                         distill):
    """Two ranks' training examples are disjoint and together every training conversation (or prompt, with --distill);
    rank 0 alone holds the held-out ones, and rank 1 (no held-out answers among its own) trains all of its answers."""
    from transformers import AutoTokenizer

    from redrafter_trt.train import TrainConfig, dataset
    from redrafter_trt.train.dataset import build_examples

    monkeypatch.setattr(dataset, "distill", lambda load, tok, prompts, *a, **k: [([5, 6, 7], None) for _ in prompts])
    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"Q{i}?", "answer": f"It is {i}."}) for i in range(9)))
    cfg = TrainConfig(base=base, data=[data], output=tmp_path / "out", cache_dir=tmp_path / "c", distill=distill,
                      eval_examples=2, max_seq_len=256)

    def questions(examples):
        return [re.findall(r"Q\d+\?", tok.decode(ex.ids))[0] for ex in examples]

    (train0, held0), (train1, held1) = (
        build_examples(cfg, tok, lambda: pytest.fail("the base ran"), tmp_path / "c", torch.float32, rank=rank,
                       world=2) for rank in range(2))
    alone, held = build_examples(cfg, tok, lambda: pytest.fail("the base ran"), tmp_path / "c", torch.float32)
    assert (len(train0), len(train1), len(held0), held1) == (4, 3, 2, [])
    assert sorted(questions(train0) + questions(train1)) == sorted(questions(alone))
    assert questions(held0) == questions(held)


def test_examples_left_without_answer_tokens_by_max_seq_len_are_counted_in_a_warning(tmp_path, caplog):
    """A conversation whose prompt filled --max-seq-len kept no answer token and was dropped without a word: here
    half the data, seen only as a smaller count in an info line."""
    from transformers import AutoTokenizer

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"question": ("long " * 20 if i % 2 else "") + f"{i}?",
                                          "answer": f"It is {i}."}) for i in range(6)))
    cfg = TrainConfig(base=base, data=[data], output=tmp_path / "out", cache_dir=tmp_path / "c", max_seq_len=64,
                      eval_examples=0)
    cfg.validate()
    with caplog.at_level("WARNING"):
        train, _ = build_examples(cfg, tok, lambda: None, tmp_path / "c", torch.float32)
    assert len(train) == 3
    assert "left out 3 of 6 examples with fewer than 2 answer tokens in a row: their prompt (after the chat " \
           "template) fills --max-seq-len 64" in caplog.text
    data.write_text("\n".join(line for i, line in enumerate(data.read_text().split("\n")) if i % 2))
    with pytest.raises(ConfigError, match=r"^no training example has an answer of 2 or more tokens in a row within "
                                          r"--max-seq-len 64 .*: raise --max-seq-len"):
        build_examples(cfg, tok, lambda: None, tmp_path / "c", torch.float32)


def test_answer_tokens_cut_by_max_seq_len_are_counted_in_a_warning(tmp_path, caplog):
    """A reference conversation longer than --max-seq-len is cut from its end: a long chat's later answers were left
    out without a word (the info line's token count alone changed)."""
    from transformers import AutoTokenizer

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    chat = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello there, friend."},
            {"role": "user", "content": "More?"}, {"role": "assistant", "content": "word " * 40}]
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"messages": chat}) + "\n" + json.dumps({"question": "Short?", "answer": "Yes."}))
    cfg = TrainConfig(base=base, data=[data], output=tmp_path / "out", cache_dir=tmp_path / "c", max_seq_len=120,
                      eval_examples=0)
    cfg.validate()
    with caplog.at_level("WARNING"):
        train, _ = build_examples(cfg, tok, lambda: None, tmp_path / "c", torch.float32)
    [long] = [ex for ex in train if ex.cut]
    whole = build_examples(TrainConfig(**{**vars(cfg), "max_seq_len": 512}), tok, lambda: None, tmp_path / "c",
                           torch.float32)[0]
    assert long.cut == max(sum(ex.mask) for ex in whole) - sum(long.mask) > 0  # the answer tokens past 120
    assert f"1 of 2 examples run past --max-seq-len 120: their last {long.cut} answer tokens were left out; " \
           "raise --max-seq-len to train on them" in caplog.text


def test_an_answer_cut_by_one_token_is_counted_in_the_warning(tmp_path, caplog):
    """An example whose last answer token (its <|im_end|>) lies past --max-seq-len is warned about: one token is
    one left out."""
    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples

    tok = make_tokenizer(tmp_path / "tok")
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "Hi?", "answer": "Hello there."}) + "\n")
    whole = encode(tok, read_conversations(data)[0], 1000)
    assert whole.mask[-2:] == (True, False)  # <|im_end|>, then the newline after it (not trained)
    cfg = TrainConfig(base=tmp_path, data=[data], output=tmp_path / "out", eval_examples=0,
                      max_seq_len=len(whole.ids) - 2)
    with caplog.at_level("WARNING"):
        [ex], _ = build_examples(cfg, tok, lambda: pytest.fail("the base ran"), tmp_path / "c", torch.float32)
    assert ex.cut == 1
    assert f"1 of 1 examples run past --max-seq-len {cfg.max_seq_len}: their last 1 answer tokens were left out" \
        in caplog.text, caplog.text


def test_held_out_examples_and_prompts_are_ones_that_train(tmp_path):
    """The held-out conversations give examples with 2 answer tokens in a row, as the training ones (one whose
    prompt fills --max-seq-len is left out), and `held_prompts` their first prompts as --distill answers them: each
    once, cut to leave 2 answer tokens within --max-seq-len."""
    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples, learnable, read_all, split_by_prompt

    tok = make_tokenizer(tmp_path / "tok")
    data = tmp_path / "qa.jsonl"
    records = [{"question": "Same?", "answer": "One."}, {"question": "Same?", "answer": "Two."},
               {"question": "x" * 80, "answer": "Long."}] + [{"question": f"Q{i}?", "answer": f"A{i}."}
                                                            for i in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = TrainConfig(base=tmp_path, data=[data], output=tmp_path / "out", eval_examples=3, max_seq_len=64, seed=3)
    held_c = split_by_prompt(read_all(cfg, tok), cfg.eval_examples)[1]
    assert sorted(c.messages[0]["content"] for c in held_c) == sorted(["Same?", "Same?", "x" * 80])  # seed 3's
    held_prompts = []
    train, held = build_examples(cfg, tok, lambda: pytest.fail("the base ran"), tmp_path / "c", torch.float32,
                                 held_prompts=held_prompts)
    assert len(train) == 3 and len(held) == 2 and all(learnable(ex) for ex in held)
    assert len(held_prompts) == len({tuple(p) for p in held_prompts}) == 2
    assert all(len(p) <= cfg.max_seq_len - 2 for p in held_prompts)


def test_distill_says_it_leaves_out_the_user_turns_after_an_answer(tmp_path, caplog):
    """--distill answers each conversation's first prompt only: a multi-turn ShareGPT file lost every later turn
    without a word."""
    from transformers import AutoTokenizer

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    data = tmp_path / "sg.json"
    turns = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}, {"from": "human", "value": "Bye"},
             {"from": "gpt", "value": "Ciao"}]
    two_asks = turns[:3] + [{"from": "human", "value": "!"}]
    data.write_text(json.dumps([{"conversations": c} for c in (turns, two_asks, turns[:2], [turns[0], turns[2]])]))
    cfg = TrainConfig(base=base, data=[data], output=tmp_path / "out", cache_dir=tmp_path / "c", distill=True,
                      eval_examples=0)
    cfg.validate()

    class Stop(Exception):
        pass

    def load():
        raise Stop

    with caplog.at_level("WARNING"), pytest.raises(Stop):
        build_examples(cfg, tok, load, tmp_path / "c", torch.float32)
    assert "2 of 4 conversations have user turns after an answer: --distill answers each conversation's first " \
           "prompt only" in caplog.text


def test_examples_whose_answers_are_all_empty_teach_nothing_and_are_left_out(tmp_path, caplog):
    """A ShareGPT conversation of empty answers has an answer token per turn (the end of turn) but no two in a row:
    no draft step learns from it. Two such turns once passed for an example; a file of them trained steps on empty
    batches, then ended in torch.cat's traceback."""
    from transformers import AutoTokenizer

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    empty = [("human", "Q"), ("gpt", ""), ("human", "More?"), ("gpt", "")]
    data = _sharegpt(tmp_path, *[[("human", f"{i}?"), ("gpt", f"It is {i}.")] for i in range(2)], empty,
                     [("human", "R"), ("gpt", "")])
    cfg = TrainConfig(base=base, data=[data], output=tmp_path / "out", cache_dir=tmp_path / "c", eval_examples=0)
    cfg.validate()
    with caplog.at_level("WARNING"):
        train, _ = build_examples(cfg, tok, lambda: None, tmp_path / "c", torch.float32)
    assert sorted(tok.decode([t for t, m in zip(ex.ids, ex.mask) if m]) for ex in train) == \
        ["It is 0.<|im_end|>", "It is 1.<|im_end|>"]
    # since blank answers are no answers (as Alpaca's "output": ""), left out before: prompts for --distill
    assert "left out 2 of 4 conversations with no answer" in caplog.text
    data.write_text(json.dumps([{"conversations": [{"from": w, "value": v} for w, v in empty]}]))
    caplog.clear()
    with pytest.raises(ConfigError, match=r"^the data has prompts but no answers: pass --distill"):
        build_examples(cfg, tok, lambda: None, tmp_path / "c", torch.float32)
    assert "with no answer" not in caplog.text  # said once, by the error (a warning said it again before it)


def test_openai_text_parts_and_the_developer_role_are_read_as_serve_reads_them(tmp_path):
    """Messages as OpenAI clients send them (and `serve` takes them): a content of text parts, the system prompt as
    "developer". train skipped every such record, and refused a file of them; run --input-file refused it."""
    parts = [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]
    path = tmp_path / "openai.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "developer", "content": "Be brief."},
                                             {"role": "user", "content": parts},
                                             {"role": "assistant", "content": [{"type": "text", "text": "Yo"}]}]}))
    (conv,) = read_conversations(path)
    assert conv.messages == ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi\nthere"},
                             {"role": "assistant", "content": "Yo"})
    path.write_text(json.dumps({"conversations": [{"role": "user", "content": parts}]}))
    assert load_prompts(path) == ["Hi\nthere"]
    image = {"type": "image_url", "image_url": {"url": "x"}}  # beside text parts: no text, refused (no KeyError)
    with pytest.raises(ValueError, match=r"^`messages` has a 'user' message whose `value`/`content` is \[\{'type'"):
        conversation_of({"messages": [{"role": "user", "content": [*parts, image]}, {"role": "assistant",
                                                                                    "content": "Yo"}]})


@pytest.mark.parametrize("record", [
    {"system": "Be terse.", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
    {"system": "Be terse.", "instruction": "Q", "output": "A"},
])
def test_a_records_own_system_prompt_opens_its_conversation(tok, record):
    """LLaMA-Factory's ShareGPT and Alpaca files carry the system prompt in a `system` column: it was dropped without
    a word, and the template's default system prompt rendered instead (what --distill's base then answered)."""
    conv = conversation_of(record)
    assert conv.messages[0] == {"role": "system", "content": "Be terse."}
    ex = encode(tok, conv, 1000)
    assert tok.decode(ex.ids).startswith("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nQ")
    assert _masked_text(tok, ex) == "A<|im_end|>"
    with pytest.raises(ValueError, match=r"`system` is \['x'\]: write the system prompt as a string"):
        conversation_of({**record, "system": ["x"]})
    assert conversation_of({**record, "system": ""}).messages[0]["role"] == "user"


@pytest.mark.parametrize("column", ["system", "system_prompt"])
def test_a_system_column_half_a_surrogate_pair_is_refused_only_where_it_opens_the_conversation(tmp_path, column):
    """A record's system column is read only when its messages open with no system one: a half surrogate pair there
    (a scraped emoji cut in two) once refused only records it opened, and since 1cdd9c9 checked every record's
    column, refusing a conversation opening with its own system message (`system_prompt` one it never read)."""
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({column: "Be brief \ud83d", "messages": chat}) + "\n")
    assert [list(c.messages) for c in read_conversations(path)] == [chat]
    assert [p.messages() for p in load_prompts(path)] == [chat[:2]]
    with pytest.raises(ValueError, match=rf"^`{column}` holds half a surrogate pair \('\\ud83d' at character 9\)"):
        conversation_of({column: "Be brief \ud83d", "messages": chat[1:]})


# Llama-3.2's system header: today's date unless the caller gives `date_string`
DATED = ("{%- if not date_string is defined %}{%- if strftime_now is defined %}"
         "{%- set date_string = strftime_now('%d %b %Y') %}{%- else %}{%- set date_string = 'none' %}{%- endif %}"
         "{%- endif %}{{ '<|im_start|>system\nToday Date: ' + date_string + '<|im_end|>\n' }}"
         "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_a_template_that_writes_todays_date_renders_the_same_every_day(tmp_path):
    """Llama-3.2's template puts today's date in its system prompt: the token ids of every prompt, and with them the
    keys of the distilled answers and hidden states, changed at midnight, and a distillation resumed the next day
    answered every prompt anew. The date is now Llama-3.1's fixed default."""
    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = DATED
    conv = conversation_of({"question": "Q", "answer": "A"})
    assert tok.decode(prompt_ids(tok, conv)).startswith("<|im_start|>system\nToday Date: 26 Jul 2024<|im_end|>\n")
    ex = encode(tok, conv, 1000)
    assert tok.decode(ex.ids).startswith("<|im_start|>system\nToday Date: 26 Jul 2024<|im_end|>\n")
    assert _masked_text(tok, ex) == "A<|im_end|>"


def test_a_template_that_calls_strftime_now_itself_renders_the_same_every_day_but_in_serve(tmp_path):
    """A template that dates its system prompt with `strftime_now(...)` and no `date_string` check rendered today's
    date through render_chat, so train's caches missed after midnight. render_chat's is DATE_STRING's day now; serve
    (apply_chat_template as it is) keeps today's."""
    from datetime import datetime

    from redrafter_trt.tokens import render_chat

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = "{{ 'Today: ' + strftime_now('%Y-%m-%d') + '\n' }}" + CHATML
    messages = [{"role": "user", "content": "Q"}]
    assert render_chat(tok, messages, add_generation_prompt=True).startswith("Today: 2024-07-26\n")
    today = datetime.now().strftime("%Y-%m-%d")
    served = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert served.startswith(f"Today: {today}\n") or served.startswith(f"Today: {datetime.now():%Y-%m-%d}\n")


@pytest.mark.parametrize("messages", [
    [("user", "Hi there"), ("assistant", "Hello! How can I help?")],  # the template's default system prompt
    [("system", "Be terse."), ("user", "2+2?"), ("assistant", "4")],
    [("user", "Hi"), ("assistant", "Yo!"), ("user", "Bye now"), ("assistant", "Ciao, friend.")],
    [("user", "Hi"), ("assistant", ""), ("user", "again"), ("assistant", "ok")],
])
def test_the_mask_is_transformers_assistant_mask_on_smollm2(smollm2, messages):
    """The assistant mask is what transformers' `return_assistant_tokens_mask` gives for SmolLM2's own template with
    its assistant content and end of turn inside {% generation %}: the answer and <|im_end|>, not the newline after,
    nor a system prompt (given or the template's default), user turns or role headers."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    msgs = [{"role": r, "content": c} for r, c in messages]
    ex = encode(tok, Conversation(tuple(msgs)), 1000)
    header = "{{ '<|im_start|>' + message['role'] + '\n' }}"
    tok.chat_template = tok.chat_template.replace(
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}",
        "{% if message['role'] == 'assistant' %}" + header + "{% generation %}{{ message['content'] + '<|im_end|>' }}"
        "{% endgeneration %}{{ '\n' }}{% else %}" + header + "{{ message['content'] + '<|im_end|>\n' }}{% endif %}")
    assert "{% generation %}" in tok.chat_template
    want = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert list(ex.ids) == list(want["input_ids"])
    assert list(ex.mask) == [bool(m) for m in want["assistant_masks"]]


MODERATION = [{"categories": {"harassment": False, "hate": False, "sexual": False, "violence": False},
               "category_scores": {"harassment": 1.2e-05, "hate": 3.1e-06, "sexual": 2.2e-05, "violence": 4.0e-06},
               "flagged": False}]
LMSYS = {"conversation_id": "33f01939a744455c869cb234afca47f1", "model": "vicuna-13b",
         "conversation": [{"content": "What is the capital of France?", "role": "user"},
                          {"content": "The capital of France is Paris.", "role": "assistant"},
                          {"content": "And of Italy?", "role": "user"},
                          {"content": "Rome.", "role": "assistant"}],
         "turn": 2, "language": "English", "openai_moderation": MODERATION * 4, "redacted": False}
HEADER = {"accept-language": "en-GB,en;q=0.9", "user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"}
WILDCHAT = {"conversation_hash": "c9ec5b440fbdd2a269333dd241f32f64", "model": "gpt-3.5-turbo-0301",
            "timestamp": "2023-04-09T00:02:53Z",
            "conversation": [{"content": "Write a haiku about rain.", "country": "United Kingdom",
                              "hashed_ip": "f5e4c3b2a1", "header": HEADER, "language": "English", "redacted": False,
                              "role": "user", "state": "Gloucestershire", "timestamp": None, "toxic": False,
                              "turn_identifier": 101932},
                             {"content": "Soft rain on the roof", "country": None, "hashed_ip": None, "header": None,
                              "language": "English", "redacted": False, "role": "assistant", "state": None,
                              "timestamp": "2023-04-09T00:02:53Z", "toxic": False, "turn_identifier": 101932}],
            "turn": 1, "language": "English", "openai_moderation": MODERATION * 2,
            "detoxify_moderation": [{"identity_attack": 0.0001, "toxicity": 0.0007}] * 2, "toxic": False,
            "redacted": False, "state": "Gloucestershire", "country": "United Kingdom", "hashed_ip": "f5e4c3b2a1",
            "header": HEADER}


def test_lmsys_chat_and_wildchat_records_are_read_from_their_conversation(tmp_path):
    """LMSYS-Chat-1M and WildChat keep each conversation under `conversation`, OpenAI-style messages (WildChat's with
    its language, toxic, redacted, turn_identifier... beside role and content): train refused every record ('no
    prompt: expected one of the keys ...'), and so did run --input-file. Read as `messages` is, the extra keys left
    alone; an unknown role is refused naming `conversation`."""
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(LMSYS) + "\n" + json.dumps(WILDCHAT) + "\n")
    convs = read_conversations(path)
    assert [list(c.messages) for c in convs] == [
        [{"role": m["role"], "content": m["content"]} for m in r["conversation"]] for r in (LMSYS, WILDCHAT)]
    assert load_prompts(path) == ["What is the capital of France?", "Write a haiku about rain."]
    critic = {**LMSYS, "conversation": [*LMSYS["conversation"][:1], {"content": "{}", "role": "critic"}]}
    with pytest.raises(ValueError, match=r"^`conversation` has a message with role 'critic': expected human/user"):
        conversation_of(critic)


def test_a_message_without_a_role_is_named_with_the_keys_it_holds(tmp_path):
    """A message with neither `from` nor `role` was refused as one 'with role None: expected human/user, ...', which
    named neither the message nor what it holds."""
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"conversation": [{"speaker": "human", "text": "Hi"}]}) + "\n")
    with pytest.raises(ConfigError, match=r" line 1: `conversation` message 1 has no `from` or `role` \(it holds "
                                          r"speaker, text\): write each message as \{\"role\": \"user\"\|\"assistant\", "
                                          r"\"content\": \.\.\.\}$"):
        load_prompts(path)


CAPYBARA = {"source": "Airoboros", "conversation": [  # LDJnr/Capybara's (and Pure-Dove's): one exchange a message
    {"input": "Name a prime.", "output": "7."}, {"input": "And an even one?", "output": "2."}]}


def test_capybaras_input_output_exchanges_are_read_as_turns(tmp_path):
    """LDJnr/Capybara writes a conversation as exchanges, {"input": the user's turn, "output": the answer}, under
    `conversation`: train skipped every record and run --input-file, bench and acceptance refused it ('`conversation`
    message 1 has no `from` or `role` (it holds input, output)'). Each exchange is read as its two turns; an exchange
    without `output` is its user turn (a prompt for --distill), and a blank first input is named by its message."""
    path = tmp_path / "capybara.jsonl"
    path.write_text(json.dumps(CAPYBARA) + "\n" + json.dumps({"conversation": [{"input": "Hi"}]}) + "\n")
    first, second = read_conversations(path, prompts_only=True)
    assert first.messages == ({"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "7."},
                              {"role": "user", "content": "And an even one?"}, {"role": "assistant", "content": "2."})
    assert second.messages == ({"role": "user", "content": "Hi"},)
    assert [p.messages() for p in load_prompts(path)] == [[first.messages[0]], [second.messages[0]]]
    with pytest.raises(ValueError, match=r"^`conversation` message 1, its first human/user message, is empty"):
        prompt_of({"conversation": [{"input": " ", "output": "7."}]})
    with pytest.raises(ValueError, match=r"^`conversation` has a 'user' message whose `value`/`content` is 5, not a "):
        conversation_of({"conversation": [{"input": 5, "output": "7."}]})


def test_a_conversations_tools_are_rendered_with_it_and_keep_it_apart(tmp_path):
    """A record's tool definitions were dropped: train rendered its conversation as if the base had no tools, and a
    conversation with tools and the same one without were one (the second dropped as a duplicate, or split apart by
    the held-out set as one prompt). The chat template is given them, in every render (the masks' prefixes too)."""
    from test_prompts import WEATHER

    from redrafter_trt.train.dataset import split_by_prompt, unique

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = TOOLED
    chat = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "Sunny."}]
    path = tmp_path / "tools.jsonl"
    path.write_text(json.dumps({"messages": chat, "tools": [WEATHER]}) + "\n" + json.dumps({"messages": chat}) + "\n")
    tooled, plain = read_conversations(path)
    assert tooled.tools == (WEATHER,) and plain.tools == ()
    ex = encode(tok, tooled, 1000)
    assert tok.decode(ex.ids).startswith("<|im_start|>system\nTools: get_weather<|im_end|>\n")
    assert _masked_text(tok, ex) == "Sunny.<|im_end|>"
    assert tok.decode(prompt_ids(tok, tooled)).startswith("<|im_start|>system\nTools: get_weather<|im_end|>\n")
    assert tok.decode(prompt_ids(tok, plain)).startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert unique([tooled, plain]) == [tooled, plain]
    assert [len(side) for side in split_by_prompt([tooled, plain], 1)] == [1, 1]


def test_tools_a_template_does_not_show_keep_no_copy_apart(tmp_path, caplog):
    """Since a record's tools were read, the same conversation with and without them was two, whatever the template:
    on one that shows no tools (SmolLM2's) they render the same tokens, trained twice, and the held-out split could put
    one on each side, scoring training data as held out. Tools such a template does not show are no part of a
    conversation (its copy dropped as a duplicate); on one showing them, the two stay apart."""
    from test_prompts import WEATHER

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples

    base = make_chat_base(tmp_path / "base")
    chat = [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": "Sunny."}]
    data = tmp_path / "tools.jsonl"
    data.write_text(json.dumps({"messages": chat, "tools": [WEATHER]}) + "\n" + json.dumps({"messages": chat}) + "\n")
    cfg = TrainConfig(base=base, data=[data], output=tmp_path / "out", cache_dir=tmp_path / "c", eval_examples=0)
    cfg.validate()
    counts = {}
    for name, template in [("plain", CHATML), ("tooled", TOOLED)]:
        tok = make_tokenizer(tmp_path / name)
        tok.chat_template = template
        caplog.clear()
        with caplog.at_level("WARNING"):
            train, _ = build_examples(cfg, tok, lambda: pytest.fail("the base ran"), tmp_path / "c", torch.float32)
        counts[name] = len(train), "dropped 1 duplicate conversations of 2" in caplog.text
    assert counts == {"plain": (1, True), "tooled": (2, False)}

def test_an_openorca_records_system_prompt_opens_its_conversation(tok, tmp_path):
    """OpenOrca's records are system_prompt + question + response: the system prompt (the one the response was
    written to) was dropped without a word, and the template's default one rendered instead, by train and by run
    --input-file alike. It now opens the conversation as a record's `system` string does; OpenOrca's empty one is
    none, and one that is no string is refused naming `system_prompt`."""
    records = [{"id": "niv.242684", "system_prompt": "You are an AI assistant. You will be given a task. You must "
                "generate a detailed and long answer.", "question": "Translate to German: Good morning.",
                "response": "Guten Morgen."},
               {"id": "flan.564327", "system_prompt": "", "question": "Is 7 prime?", "response": "Yes."}]
    path = tmp_path / "orca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    first, second = read_conversations(path)
    assert first.messages == ({"role": "system", "content": records[0]["system_prompt"]},
                              {"role": "user", "content": "Translate to German: Good morning."},
                              {"role": "assistant", "content": "Guten Morgen."})
    assert [m["role"] for m in second.messages] == ["user", "assistant"]
    assert [p.messages() for p in load_prompts(path)] == [c.prompt_messages() for c in (first, second)]
    assert tok.decode(encode(tok, first, 1000).ids).startswith(f"<|im_start|>system\n{records[0]['system_prompt']}")
    with pytest.raises(ValueError, match=r"^`system_prompt` is 5: write the system prompt as a string$"):
        conversation_of({**records[1], "system_prompt": 5})


def test_a_blank_system_column_leaves_the_next_one_read(tmp_path):
    """A mixed table's row holds every dataset's system column, "" where another's: {"system": "", "system_prompt":
    "You are ..."} dropped the system prompt without a word (the first column not null was read, as answers were
    once), and a blank one opened the conversation with a blank system turn. The first neither null nor blank is read
    (`first_filled`), as the prompt and answer keys are."""
    rows = [{"system": "", "system_prompt": "You are a tutor.", "question": "Is 7 prime?", "response": "Yes."},
            {"system": " ", "system_prompt": None, "question": "Is 9 prime?", "response": "No."}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [list(c.messages) for c in read_conversations(path)] == [
        [{"role": "system", "content": "You are a tutor."}, {"role": "user", "content": "Is 7 prime?"},
         {"role": "assistant", "content": "Yes."}],
        [{"role": "user", "content": "Is 9 prime?"}, {"role": "assistant", "content": "No."}]]
    assert [p.messages() for p in load_prompts(path)] == [
        [{"role": "system", "content": "You are a tutor."}, {"role": "user", "content": "Is 7 prime?"}],
        [{"role": "user", "content": "Is 9 prime?"}]]


def test_a_conversation_column_holding_no_messages_leaves_the_records_prompt_read(tmp_path):
    """Since `conversation` was read (LMSYS-Chat-1M's), a record holding it as a transcript string beside question +
    response (an OpenOrca-derived set), or as null (OpenOrca and LMSYS rows in one table, each the other's column
    empty), was refused as '`conversation` must be a non-empty list of messages', where its question and response
    were read before. A conversation key holding no list of messages is passed over for a prompt key (or a later
    conversation key); one alone is still refused, as is an answer that is no string beside it."""
    orca = {"id": "flan.564327", "system_prompt": "Be brief.", "question": "Is 7 prime?", "response": "Yes.",
            "conversation": "Human: Is 7 prime?\nAssistant: Yes."}
    mixed = [{**orca, "conversation": None}, {**LMSYS, "system_prompt": None, "question": None, "response": None},
             {"conversations": None, "messages": LMSYS["conversation"]}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [orca, *mixed]))
    convs = read_conversations(path)
    assert [list(c.messages) for c in convs] == [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is 7 prime?"},
         {"role": "assistant", "content": "Yes."}]] * 2 + [LMSYS["conversation"]] * 2
    assert load_prompts(path) == ["Is 7 prime?"] * 2 + ["What is the capital of France?"] * 2
    empty = {"conversations": [], "question": "Q", "response": "A"}  # an empty list holds no messages either
    assert list(conversation_of(empty).messages) == [{"role": "user", "content": "Q"},
                                                     {"role": "assistant", "content": "A"}]
    assert prompt_of(empty) == "Q"
    with pytest.raises(ValueError, match=r"^`conversation` must be a non-empty list of messages$"):
        conversation_of({"id": "x", "conversation": "Human: Hi"})
    with pytest.raises(ValueError, match=r"^`response` is 5: write the answer as a string$"):
        conversation_of({**orca, "response": 5})


def test_a_null_prompt_column_leaves_the_next_prompt_key_read(tmp_path):
    """A mixed table's rows hold every dataset's columns, null where another's: {"prompt": null, "question": ...}
    was refused as '`prompt` must be a non-empty string' while an answer column is read as the first not null. The
    first prompt key not null is read; one null alone is still refused."""
    rows = [{"prompt": None, "question": "Is 7 prime?", "response": "Yes."},
            {"prompt": None, "instruction": "Add 2 and 3.", "output": "5"}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [list(c.messages) for c in read_conversations(path)] == [
        [{"role": "user", "content": "Is 7 prime?"}, {"role": "assistant", "content": "Yes."}],
        [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}]]
    assert load_prompts(path) == ["Is 7 prime?", "Add 2 and 3."]
    with pytest.raises(ValueError, match=r"^`prompt` must be a non-empty string$"):
        conversation_of({"prompt": None, "response": "Yes."})


def test_a_blank_column_of_a_mixed_table_leaves_the_next_key_read(tmp_path):
    """A blank answer is no answer, as null is (1007070), and a null prompt or answer column is passed over for the
    next (3c6896e): a mixed table filled with "" where another dataset's column is, {"question": "", "instruction":
    ..., "answer": "", "output": ...}, was refused ('`question` must be a non-empty string'), and a GSM8K row's
    response beside a blank `answer` left out as no answer ('pass --distill'). A blank column is passed over as a null
    one; one alone is still refused, or no answer."""
    rows = [{"question": "", "instruction": "Add 2 and 3.", "input": "", "answer": "", "output": "5"},
            {"prompt": " ", "question": "Is 7 prime?", "answer": "", "response": "Yes."}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [list(c.messages) for c in read_conversations(path)] == [
        [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}],
        [{"role": "user", "content": "Is 7 prime?"}, {"role": "assistant", "content": "Yes."}]]
    assert load_prompts(path) == ["Add 2 and 3.", "Is 7 prime?"]
    with pytest.raises(ValueError, match=r"^`prompt` must be a non-empty string$"):
        conversation_of({"prompt": "", "question": None, "response": "Yes."})
    assert list(conversation_of({"question": "Q", "answer": "", "response": None}).messages) == [
        {"role": "user", "content": "Q"}]
    with pytest.raises(ValueError, match=r"^`response` is 5: write the answer as a string$"):
        conversation_of({"question": "Q", "answer": " ", "response": 5})


def test_a_metamathqa_records_query_is_its_prompt(tmp_path):
    """MetaMathQA's records are query + response (+ type, original_question): `query` was not read, and every record
    refused ('no prompt: expected one of the keys ...') by train and run --input-file alike. The query (the rephrased
    question the response answers, not `original_question`) is now the prompt."""
    records = [{"type": "GSM_Rephrased", "query": "If Jasmine's shoe size is 7 and Alexa's shoes are twice as big, what "
                "is their combined shoe size?", "original_question": "Jasmine wants to know the total size of "
                "her and Alexa's shoes. ...", "response": "Alexa's size is 2 * 7 = 14.\nTogether: 7 + 14 = 21.\n"
                "#### 21\nThe answer is: 21"},
               {"type": "MATH_AnsAug", "query": "What is $\\sqrt{49}$?", "original_question": "What is "
                "$\\sqrt{49}$?", "response": "$\\sqrt{49} = \\boxed{7}$.\nThe answer is: 7"}]
    path = tmp_path / "metamath.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [list(c.messages) for c in read_conversations(path)] == [
        [{"role": "user", "content": r["query"]}, {"role": "assistant", "content": r["response"]}] for r in records]
    assert load_prompts(path) == [r["query"] for r in records]


@pytest.mark.parametrize("key", ["context", "query"])
def test_a_dolly_records_context_is_part_of_its_prompt(tmp_path, key):
    """databricks-dolly-15k's records are instruction + context + response: the context (the passage to summarise or
    answer from) was dropped without a word, and the response trained after a prompt without it. LLaMA-Factory names
    the input column `query`: read as MetaMathQA's prompt before `instruction` (5d86800), it was trained and run
    alone, the instruction dropped, where the instruction was read before; it is now the instruction's input too."""
    path = tmp_path / "dolly.jsonl"
    path.write_text(json.dumps({"instruction": "Summarise it.", key: "A long passage.", "response": "Short.",
                                "category": "summarization"}) + "\n")
    (conv,) = read_conversations(path)
    assert conv.messages == ({"role": "user", "content": "Summarise it.\n\nA long passage."},
                             {"role": "assistant", "content": "Short."})
    assert load_prompts(path) == ["Summarise it.\n\nA long passage."]


@pytest.mark.parametrize("messages", [
    [("user", "Hi"), ("assistant", "Yo!")],
    [("system", "Be terse."), ("user", "2+2?"), ("assistant", "4"), ("user", "and 3+3?"), ("assistant", "6")],
    [("user", "Hi"), ("assistant", ""), ("user", "again"), ("assistant", "ok")],
])
def test_a_chatml_base_whose_eos_is_endoftext_trains_no_newline_after_im_end(tmp_path, messages):
    """A ChatML base whose EOS is <|endoftext|> (Qwen2's base models: <|im_end|> ends a turn, but is no EOS): the
    mask ran on past <|im_end|> to the template's newline between turns, which the base never emits as part of an
    answer; it ends at <|im_end|> now, as transformers' `return_assistant_tokens_mask` does for the same template
    with the answer and <|im_end|> inside {% generation %}."""
    tok = make_tokenizer(tmp_path, eos="<|endoftext|>")
    assert tok.eos_token == "<|endoftext|>" and tok.convert_tokens_to_ids("<|im_end|>") != tok.eos_token_id
    msgs = [{"role": r, "content": c} for r, c in messages]
    ex = encode(tok, Conversation(tuple(msgs)), 1000)
    answers = [c for r, c in messages if r == "assistant"]
    assert _masked_text(tok, ex) == "".join(a + "<|im_end|>" for a in answers)
    tok.chat_template = CHATML.replace(
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}",
        "{{'<|im_start|>' + message['role'] + '\n'}}{% if message['role'] == 'assistant' %}{% generation %}"
        "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}"
        "{% endif %}{{ '\n' }}")
    assert "{% generation %}" in tok.chat_template
    want = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert list(ex.ids) == list(want["input_ids"])
    assert list(ex.mask) == [bool(m) for m in want["assistant_masks"]]


def test_an_alpaca_records_history_comes_before_its_prompt(tok, tmp_path):
    """LLaMA-Factory's Alpaca format keeps a conversation's earlier turns in `history` ([[instruction, answer], ...]):
    they were dropped without a word, and the last answer trained after a prompt without the turns it follows. They
    now open the conversation (after its `system`), their answers trained too, as LLaMA-Factory trains them."""
    record = {"system": "S", "instruction": "And 3+3?", "input": "", "output": "6",
              "history": [["1+1?", "2"], ["2+2?", "4"]]}
    conv = conversation_of(record)
    assert [(m["role"], m["content"]) for m in conv.messages] == [
        ("system", "S"), ("user", "1+1?"), ("assistant", "2"), ("user", "2+2?"), ("assistant", "4"),
        ("user", "And 3+3?"), ("assistant", "6")]
    assert _masked_text(tok, encode(tok, conv, 1000)) == "2<|im_end|>4<|im_end|>6<|im_end|>"
    assert conversation_of({"instruction": "q", "output": "a", "history": []}).messages == (
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"})
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"instruction": "q", "output": "a", "history": [["only one"]]}) + "\n"
                    + json.dumps({"instruction": "q", "output": "a"}) + "\n")
    (kept,) = read_conversations(path)
    assert kept.source.endswith("line 2")


def test_a_record_with_an_empty_answer_is_a_prompt_for_distill(tmp_path):
    """An Alpaca file written for generation ("output": "", as run --input-file reads it) was refused by train
    --distill, which answers prompts itself: every record skipped ('`output` is '': write the answer as a non-empty
    string'), the file then 'holds no usable record'. An empty (or blank) answer is now no answer, as null is: a
    prompt for --distill, left out without it, and a `history`'s answers still trained."""
    path = tmp_path / "alpaca.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"instruction": "Name a colour.", "input": "", "output": ""},
        {"question": "2+2?", "answer": " \n"},
        {"instruction": "And 3+3?", "output": "", "history": [["1+1?", "2"]]}]))
    convs = read_conversations(path)
    assert [list(c.messages) for c in convs] == [
        [{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "2+2?"}],
        [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
         {"role": "user", "content": "And 3+3?"}]]
    assert [c.prompt_messages() for c in convs[:2]] == [list(p.messages()) for p in load_prompts(path)[:2]]
    with pytest.raises(ValueError, match=r"^`output` is 3: write the answer as a string$"):
        conversation_of({"instruction": "q", "output": 3})



def test_a_conversation_whose_answers_are_blank_is_a_prompt_too(tmp_path, caplog):
    """1007070 made an Alpaca `"output": ""` no answer, left out without --distill ('pass --distill'), but a `messages`
    or ShareGPT record ending in an empty (or blank) assistant turn, as generation files write it, still counted as
    answered: without --distill the blank one trained as an answer ('  \\n<|im_end|>'), the empty one was dropped later
    as too short, and a file of them was told 'raise --max-seq-len, or give longer conversations or more data'. An
    assistant turn of blank text is no answer: such a conversation is a prompt, left out with the others."""
    from transformers import AutoTokenizer

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples

    base = make_chat_base(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(base)
    blank = [{"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": ""}]},
             {"conversations": [{"from": "human", "value": "Say bye."}, {"from": "gpt", "value": "  \n"}]},
             {"instruction": "And 3+3?", "output": "", "history": [["1+1?", ""]]}]
    data = tmp_path / "blank.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in blank))

    def examples(path):
        cfg = TrainConfig(base=base, data=[path], output=tmp_path / "out", cache_dir=tmp_path / "c")
        cfg.validate()
        return build_examples(cfg, tok, lambda: pytest.fail("the base ran"), tmp_path / "c", torch.float32)

    with pytest.raises(ConfigError, match="^the data has prompts but no answers: pass --distill"):
        examples(data)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(data.read_text() + json.dumps({"question": "2+2?", "answer": "Four."}) + "\n")
    with caplog.at_level("WARNING"):
        train, held = examples(mixed)
    assert [tok.decode([t for t, m in zip(ex.ids, ex.mask) if m]) for ex in train + held] == ["Four.<|im_end|>"]
    assert "left out 3 of 4 conversations with no answer" in caplog.text and "pass --distill" in caplog.text


def test_run_bench_and_train_take_one_prompt_from_a_record(tmp_path):
    """run, bench and acceptance took a record's first human turn alone, train every turn before its first answer:
    two human turns in a row (a ShareGPT question split in two, after a system message or not) were measured on half
    the prompt the drafter trained on, and an Alpaca record's `history` was passed over. One rule now, the
    conversation up to its first answer: the same tokens in both, consecutive turns joined only for a template
    refusing them (Llama-2, Mistral), the plain text the user turns joined."""
    from redrafter_trt.tokens import encode_prompts

    def sharegpt(*turns):
        return {"conversations": [{"from": who, "value": text} for who, text in turns]}

    records = [sharegpt(("human", "A"), ("human", "B"), ("gpt", "C")),
               sharegpt(("system", "S"), ("human", "A"), ("human", "B"), ("gpt", "C"), ("human", "D"), ("gpt", "E")),
               {"messages": [{"role": "user", "content": "A"}, {"role": "user", "content": "B"}], "system": "S"},
               {"system": "S", "instruction": "And 3+3?", "output": "6", "history": [["1+1?", "2"]]},
               {"turns": ["T1", "T2"]},
               sharegpt(("gpt", "Hello!"), ("human", "A"), ("system", "S"), ("human", "B"))]  # no strict template's
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    prompts = load_prompts(path)
    assert prompts == ["A\n\nB"] * 3 + ["1+1?", "T1", "A\n\nB"]
    tok = make_tokenizer(tmp_path / "tok")
    assert encode_prompts(tok, prompts, True) == [prompt_ids(tok, c) for c in read_conversations(path)]
    assert tok.decode(encode_prompts(tok, prompts[1:2], True)[0]) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nA<|im_end|>\n<|im_start|>user\nB<|im_end|>\n"
        "<|im_start|>assistant\n")
    tok.chat_template = STRICT
    assert encode_prompts(tok, prompts[:-1], True) == [prompt_ids(tok, c) for c in read_conversations(path)[:-1]]
    assert tok.decode(encode_prompts(tok, prompts[:1], True)[0]).endswith("A\n\nB<|im_end|>\n<|im_start|>assistant\n")
    assert encode_prompts(tok, prompts, False) == [tok(p)["input_ids"] for p in prompts]


def test_run_and_bench_render_a_dated_template_as_train_does(tmp_path):
    """train rendered a template dating its system prompt (Llama-3.2's) with a fixed date and run, bench and
    acceptance with today's: their prompts' tokens were not those the drafter trained on, and bench's numbers
    depended on the day. Every path renders the same fixed date now."""
    from redrafter_trt.tokens import DATE_STRING, encode_prompts

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = DATED
    want = prompt_ids(tok, conversation_of({"prompt": "Q"}))
    assert tok.decode(want).startswith(f"<|im_start|>system\nToday Date: {DATE_STRING}<|im_end|>\n")
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "Q"}\n')
    assert encode_prompts(tok, ["Q"], True) == encode_prompts(tok, load_prompts(path), None) == [want]


def test_an_interrupt_while_waiting_for_a_folders_lock_leaves_no_descriptor_open(tmp_path, monkeypatch):
    """A Ctrl-C while a run waited for a folder's `.writing.lock` (held by another run's sweep, or a network file
    system's lock server in its grace period after a restart) left the lock file's descriptor open in the process."""
    import fcntl
    import os

    from redrafter_trt.train import chunks

    real = fcntl.flock

    def interrupted_while_waiting(fd, op):
        if op == fcntl.LOCK_SH:
            raise KeyboardInterrupt
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", interrupted_while_waiting)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(KeyboardInterrupt), chunks.writing_into(tmp_path / "f"):
        pass
    assert set(os.listdir("/proc/self/fd")) == before


def test_an_unreadable_chunk_is_named_once_and_computed_again(tmp_path, caplog):
    """A chunk cut short (a disk filled up, a partial copy) is one warning saying it is computed again: the advice
    for a broken download ('re-download or re-export it') came first, then ': computing it again'."""
    import logging

    from redrafter_trt.train.chunks import read_chunk, write_chunk

    path, rows = tmp_path / "00000-of-00001.safetensors", torch.arange(4)
    write_chunk(path, {"rows": rows, "hidden": torch.ones(4, 3)}, {"dtype": "float32"})
    assert read_chunk(path, rows, {"dtype": "float32"})[0]["hidden"].shape == (4, 3)
    path.write_bytes(path.read_bytes()[:-5])
    with caplog.at_level(logging.WARNING):
        assert read_chunk(path, rows, {"dtype": "float32"}) is None
    assert caplog.text.count(str(path)) == 1 and "is truncated" in caplog.text, caplog.text
    assert caplog.text.rstrip().endswith(": computing it again") and "re-download" not in caplog.text


def test_a_chunk_of_other_rows_is_computed_again(tmp_path, caplog):
    """A chunk written for rows 5 and 6 (another plan's) holds no hidden states of rows 7 and 8."""
    import logging

    from redrafter_trt.train.chunks import read_chunk, write_chunk

    path = tmp_path / "00000-of-00001.safetensors"
    write_chunk(path, {"rows": torch.tensor([5, 6]), "hidden": torch.ones(2, 3)}, {"dtype": "float32"})
    with caplog.at_level(logging.WARNING):
        assert read_chunk(path, torch.tensor([7, 8]), {"dtype": "float32"}) is None
    assert f"cached chunk {path} is not that of these rows: computing it again" in caplog.text


def test_an_unreadable_file_of_hidden_states_an_earlier_version_cached_is_computed_again(tmp_path, caplog):
    """The single `hidden-KEY.safetensors` of a version before session 44, cut short (a disk filled up, a partial
    copy): train stopped with exit 2 and a broken download's advice ('re-download or re-export it', for a cache file);
    it is one warning saying the hidden states are computed again, as an unreadable chunk is, and removed (read before
    the chunks, it would be named again at every run)."""
    import logging

    from transformers import AutoModelForCausalLM

    from redrafter_trt.io import write_safetensors
    from redrafter_trt.train import features

    examples = _sums([6, 7])
    _, _, anchors, _ = flatten(examples, tail=4)
    path = tmp_path / f"hidden-{features.cache_key('base', examples)}.safetensors"
    write_safetensors(path, {"hidden": torch.randn(len(anchors), 8).half()})
    path.write_bytes(path.read_bytes()[:-5])
    base = AutoModelForCausalLM.from_pretrained(make_hf(tmp_path / "base", "llama", vocab_size=128)).eval()
    with caplog.at_level(logging.WARNING):
        feats = features.build_features(examples, 2, tmp_path, "base", lambda: base)
    assert feats.hidden.shape[0] == len(anchors)
    assert caplog.text.count(str(path)) == 1 and "is truncated" in caplog.text, caplog.text
    assert "computing the hidden states again" in caplog.text and "re-download" not in caplog.text, caplog.text
    assert not path.exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = features.build_features(examples, 2, tmp_path, "base", lambda: pytest.fail("the base ran"))
    assert torch.equal(again.hidden, feats.hidden) and not caplog.text, caplog.text


TOOLACE = {"system": "You are an expert in composing functions. Here is a list of functions in JSON format: [...]",
           "conversations": [{"from": "user", "value": "How are the US markets today?"},
                             {"from": "assistant", "value": '[Market Trends(trend_type="INDEXES", country="us")]'},
                             {"from": "tool", "value": '[{"name": "Market Trends", "results": {"S&P 500": "+0.4%"}}]'},
                             {"from": "assistant", "value": "The S&P 500 is up 0.4%."}]}


def test_distill_answers_a_tool_calling_records_prompt(tmp_path, caplog):
    """--distill answers each conversation's first prompt only, yet agent data (OpenAI fine-tuning files with tools,
    glaive, ToolACE) lost every record, skipped whole for the tool turns after that prompt's answer ('role 'tool'',
    a call's null content). Such a record now gives --distill its prompt, the same tokens run --input-file renders
    from it, saying how many were read so; without --distill the whole conversation is read, its calls answers
    (`test_a_tool_calling_conversation_trains_its_calls_and_answer_not_the_tool_results`). The warning said why as if
    the file were broken ('... whose `value`/`content` is None, not a string' for an OpenAI call): it says the record
    calls tools."""
    from test_prompts import OPENAI_TOOLS, TOOL_CALLING

    from redrafter_trt.tokens import encode_prompts
    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import read_all

    path = tmp_path / "agent.jsonl"
    records = [*TOOL_CALLING, TOOLACE, {"question": "2+2?", "answer": "4"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))

    def read(distill):
        return read_all(TrainConfig(base=tmp_path, data=[path], output=tmp_path / "out", distill=distill))

    with caplog.at_level("WARNING"):
        whole = sorted(read(False), key=lambda c: c.source)
    assert [len(c.messages) for c in whole] == [5, 4, 5, 5, 2] and not caplog.text, caplog.text
    assert whole[3].messages[3] == {"role": "tool", "content": TOOLACE["conversations"][2]["value"]}
    with caplog.at_level("WARNING"):
        convs = sorted(read(True), key=lambda c: c.source)
    assert f"{path}: 4 of 5 records cannot be read past their prompt (first: line 1: it calls tools, and --distill " \
           f"reads no tool turns): their prompts alone are answered" in caplog.text
    assert "None, not a string" not in caplog.text  # valid agent data, not a broken record
    assert [c.prompt_messages() for c in convs[:-1]] == [p.messages() for p in load_prompts(path)[:-1]]
    assert list(convs[0].messages) == OPENAI_TOOLS["messages"][:2]
    assert list(convs[3].messages) == [{"role": "system", "content": TOOLACE["system"]},
                                       {"role": "user", "content": "How are the US markets today?"}]
    tok = make_tokenizer(tmp_path / "tok")
    assert [prompt_ids(tok, c) for c in convs] == encode_prompts(tok, load_prompts(path), True)


QWEN25 = (Path(__file__).parent / "fixtures" / "qwen2_5_instruct_chat_template.jinja").read_text()


def test_a_tool_calling_conversation_trains_its_calls_and_answer_not_the_tool_results(tmp_path, caplog):
    """Agent data (an OpenAI fine-tuning file's tool calls, glaive's `function_call` / `observation` turns as
    LLaMA-Factory writes them) was skipped without --distill ('... whose `value`/`content` is None'): the tool-call
    text the base writes, the most predictable it writes, was never trained. A call is now an answer, written by the
    base's chat template (Qwen2.5's `<tool_call>` block, arguments given as JSON text written as the object, not
    quoted again), and a tool's result is masked as a prompt is."""
    from test_prompts import GLAIVE, GLAIVE_CHATML, OPENAI_TOOLS

    path = tmp_path / "agent.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [OPENAI_TOOLS, GLAIVE, GLAIVE_CHATML]))
    with caplog.at_level("WARNING"):
        convs = read_conversations(path)
    assert len(convs) == 3 and not caplog.text, caplog.text
    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = QWEN25
    masked = [_masked_text(tok, encode(tok, c, 10_000)) for c in convs]
    assert masked == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
        'It is 18C.<|im_end|>',
        '<tool_call>\n{"name": "convert_currency", "arguments": {"amount": 500, "from": "USD", "to": "EUR"}}\n'
        '</tool_call><|im_end|>500 US dollars are about 425.50 Euros.<|im_end|>',
        '<tool_call>\n{"name": "create_contact", "arguments": {"name": "John Doe"}}\n</tool_call><|im_end|>'
        'John Doe is in your contacts now.<|im_end|>']
    whole = tok.decode(encode(tok, convs[1], 10_000).ids)
    assert '<tool_response>\n{"converted_amount": 425.5}\n</tool_response>' in whole  # rendered, masked
    assert '"name": "convert_currency", "parameters"' in whole  # the record's tools, given to the template


def test_openai_legacy_function_calls_train_as_tool_calls_and_messages_match_serves(tmp_path):
    """OpenAI's legacy fine-tuning format (`functions`, an assistant turn's `function_call` with no content, a
    `function` turn naming the function) was skipped ("a 'assistant' message whose `value`/`content` is None"),
    though its `functions` were read: it trains as the same record written with `tool_calls` does. A tool turn's
    `name` was dropped, which serve gives the chat template: a record's messages are those serve renders."""
    from test_prompts import OPENAI_TOOLS

    from redrafter_trt.serve_request import _messages

    system, user, call, result, answer = OPENAI_TOOLS["messages"]
    legacy = {"messages": [system, user, {"role": "assistant", "function_call": call["tool_calls"][0]["function"]},
                           {"role": "function", "name": "get_weather", "content": result["content"]}, answer],
              "functions": [t["function"] for t in OPENAI_TOOLS["tools"]]}
    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = QWEN25
    old, new = (encode(tok, conversation_of(r), 10_000) for r in (legacy, OPENAI_TOOLS))
    assert (old.ids, old.mask) == (new.ids, new.mask) and "<tool_call>" in _masked_text(tok, old)
    named = {**OPENAI_TOOLS, "messages": [system, user, call, {**result, "name": "get_weather"}, answer]}
    assert conversation_of(named).messages == tuple(_messages(named["messages"], tools=True))


def test_a_legacy_function_call_that_is_no_call_leaves_the_answer_as_it_was(tmp_path):
    """An answer's `function_call` read as a call whatever it held: a logged request's "none" or "auto" (what a
    request's own `function_call` field holds) beside the answer's text skipped a record that trained before as
    "a tool call that is not ..."; only an object is a call, and the answer trains as its text."""
    plain = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
             "functions": [{"name": "get_weather", "parameters": {"type": "object"}}]}
    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = QWEN25
    want = encode(tok, conversation_of(plain), 10_000)
    for mode in ("none", "auto"):
        logged = {**plain, "messages": [plain["messages"][0], {**plain["messages"][1], "function_call": mode}]}
        got = encode(tok, conversation_of(logged), 10_000)
        assert (got.ids, got.mask) == (want.ids, want.mask)
    with pytest.raises(ValueError, match="message 2 has a tool call that is not"):  # an object is read as the call
        conversation_of({**plain, "messages": [plain["messages"][0], {"role": "assistant", "function_call": {
            "arguments": "{}"}}]})


def test_tool_calls_a_template_cannot_write_are_left_out_saying_so(tmp_path, caplog):
    """A template that writes no tool calls (SmolLM2's, this ChatML one: the call's empty content alone) would train an
    empty answer where the base calls a tool: such conversations are left out, counted, naming --distill; where
    nothing else is left, train refuses in one line."""
    from test_prompts import OPENAI_TOOLS

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import read_all

    path = tmp_path / "agent.jsonl"
    plain = [{"question": f"{n}+{n}?", "answer": str(2 * n)} for n in range(2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in [OPENAI_TOOLS] + plain))
    tok = make_tokenizer(tmp_path / "tok")
    cfg = TrainConfig(base=tmp_path, data=[path], output=tmp_path / "out")
    with caplog.at_level("WARNING"):
        convs = read_all(cfg, tok)
    assert sorted(c.messages[0]["content"] for c in convs) == ["0+0?", "1+1?"]
    assert (f"the base's chat template writes no tool calls, so the conversations calling tools (1 of 3) cannot be "
            f"trained (first: {path} line 1): left out; pass --distill") in caplog.text, caplog.text
    path.write_text(json.dumps(OPENAI_TOOLS) + "\n")
    with pytest.raises(ConfigError, match=r"writes no tool calls, .*: pass --distill to train on the base's own "
                                          r"answers to their prompts, or use a base whose chat template writes tool "
                                          r"calls \(Qwen2.5's, Qwen3's\)$"):
        read_all(cfg, tok)
    tok.chat_template = QWEN25
    assert len(read_all(cfg, tok)) == 1


def test_tool_calls_left_out_name_the_first_in_the_files(tmp_path, caplog):
    """The warning's `first:` named the first left out in the shuffled order (`data/tools.jsonl line 4` where every
    line called tools): it names the first in the files' order, as every other `first:` does."""
    from test_prompts import OPENAI_TOOLS

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import read_all

    calls = [{**OPENAI_TOOLS, "messages": [OPENAI_TOOLS["messages"][0], {"role": "user", "content": f"Paris {n}?"},
                                           *OPENAI_TOOLS["messages"][2:]]} for n in range(8)]
    path = tmp_path / "agent.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in calls + [{"question": "2+2?", "answer": "4"}]))
    tok = make_tokenizer(tmp_path / "tok")
    for seed in range(3):
        caplog.clear()
        with caplog.at_level("WARNING"):
            read_all(TrainConfig(base=tmp_path, data=[path], output=tmp_path / "out", seed=seed), tok)
        assert f"(8 of 9) cannot be trained (first: {path} line 1)" in caplog.text, caplog.text


# Qwen3's chat template, reduced to how it writes a tool-calling loop: the tools' results in one user turn, a call
# after the last user query without a <think> block unless it is the last turn (QWEN3_THINK)
QWEN3_TOOLS = ("{% set ns = namespace(last=0) %}{% for m in messages %}{% if m['role'] == 'user' %}"
               "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}{% for m in messages %}"
               "{% if m['role'] == 'tool' %}{% if messages[loop.index0 - 1]['role'] != 'tool' %}"
               "{{ '<|im_start|>user' }}{% endif %}{{ '\n<tool_response>\n' + m['content'] + '\n</tool_response>' }}"
               "{% if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{ '<|im_end|>\n' }}{% endif %}"
               "{% elif m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
               "{% if loop.index0 > ns.last and loop.last %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
               "{{ m['content'] }}{% for c in m['tool_calls'] or [] %}"
               "{{ '<tool_call>\n' + c['function']['name'] + '\n</tool_call>' }}{% endfor %}{{ '<|im_end|>\n' }}"
               "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
               "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_tool_calling_loops_train_each_answer_in_an_example_ending_at_it(tmp_path, caplog):
    """Qwen3's template writes tool calls, but gives the last answer alone a <think> block, so a call followed by
    the tool's result and an answer does not render prefix by prefix: such loops were left out (named --distill).
    Each answer (a call too) trains in the example that ends at it, as serve sends the base each step of the loop.
    A loop whose template renders it neither way (here: a tool's result left open when it is the last turn) is
    still left out, counted, naming --distill; a call answering alone still trains."""
    from test_prompts import OPENAI_TOOLS

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.data import encode_answers
    from redrafter_trt.train.dataset import read_all

    alone = {"messages": OPENAI_TOOLS["messages"][:2] + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]}]}
    path = tmp_path / "agent.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [OPENAI_TOOLS, alone, {"question": "2+2?", "answer": "4"}]))
    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = QWEN3_TOOLS
    cfg = TrainConfig(base=tmp_path, data=[path], output=tmp_path / "out")
    with caplog.at_level("WARNING"):
        convs = sorted(read_all(cfg, tok), key=lambda c: c.source)
    assert [c.source for c in convs] == [f"{path} line {i}" for i in (1, 2, 3)] and not caplog.text, caplog.text
    (call, answer), _ = encode_answers(tok, convs[0], 1000)
    assert [_masked_text(tok, ex) for ex in (call, answer)] == [
        "<think>\n\n</think>\n\n<tool_call>\nget_weather\n</tool_call><|im_end|>",
        "<think>\n\n</think>\n\nIt is 18C.<|im_end|>"]
    assert "<tool_response>\n18C\n</tool_response>" in tok.decode(answer.ids)
    tok.chat_template = QWEN3_TOOLS.replace("loop.last or messages", "not loop.last and messages")
    with caplog.at_level("WARNING"):
        convs = sorted(read_all(cfg, tok), key=lambda c: c.source)
    assert [c.source for c in convs] == [f"{path} line 2", f"{path} line 3"]
    assert (f"the base's chat template renders 1 of 2 conversations calling tools neither turn by turn nor each "
            f"answer with the turns before it, so they cannot be trained (first: {path} line 1): left out; pass "
            f"--distill") in caplog.text, caplog.text
    assert _masked_text(tok, encode(tok, convs[0], 1000)) == ("<think>\n\n</think>\n\n<tool_call>\nget_time\n"
                                                             "</tool_call><|im_end|>")
    path.write_text(json.dumps(OPENAI_TOOLS) + "\n")
    with pytest.raises(ConfigError, match=r"neither turn by turn .*: pass --distill to train on the base's own "
                                          r"answers to their prompts, or drop their turns after the first answer$"):
        read_all(cfg, tok)


def test_tool_calls_are_checked_after_duplicates_and_max_examples(tmp_path, monkeypatch):
    """Whether the template renders a tool-calling conversation turn by turn costs about two renders a turn: it was
    checked on every conversation read, duplicates and those past --max-examples too. It is checked on the shuffled
    distinct conversations until --max-examples are kept, which still keeps that many; not on one beginning a
    conversation kept (its call alone, then the result and answer in another record), which is dropped for it."""
    from test_prompts import OPENAI_TOOLS

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train import dataset
    from redrafter_trt.train.data import rendering

    checked = []
    monkeypatch.setattr(dataset, "rendering", lambda tok, conv: checked.append(conv) or rendering(tok, conv))
    records = [dict(OPENAI_TOOLS, messages=[dict(OPENAI_TOOLS["messages"][0], content=f"Q{i}")]
                    + OPENAI_TOOLS["messages"][1:]) for i in range(6)]
    path = tmp_path / "agent.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = QWEN25
    convs = dataset.read_all(TrainConfig(base=tmp_path, data=[path, path], output=tmp_path / "out", max_examples=2),
                             tok)
    assert len(convs) == 2 and len(checked) == 2, [c.source for c in checked]
    checked.clear()
    path.write_text("".join(json.dumps(r) + "\n" for r in records + [dict(r, messages=r["messages"][:3])
                                                                      for r in records]))
    convs = dataset.read_all(TrainConfig(base=tmp_path, data=[path], output=tmp_path / "out"), tok)
    assert sorted(len(c.messages) for c in convs) == [5] * 6
    for i in range(6):  # a call alone checked only where it came before the loop it begins
        assert [len(c.messages) for c in checked if c.messages[0]["content"] == f"Q{i}"] in ([5], [3, 5]), i
    assert len(checked) < 12


@pytest.mark.parametrize("template", ["turn by turn", "answer by answer"])
def test_a_tool_calling_conversation_is_rendered_once_to_check_and_encode_it(tmp_path, monkeypatch, template):
    """Whether the chat template trains a conversation calling tools is checked by rendering it (about two renders a
    turn, more where it splits answer by answer), and encoding it rendered it all again: a tool-calling data set
    was rendered twice. The check's renders are those encoding uses; but a template's texts answer by answer, each
    the conversation through an answer, are not kept from the check to encoding (their length grows with the square
    of the turns, held for the whole data set on every torchrun rank: a review): those answers render again, once."""
    from test_prompts import OPENAI_TOOLS

    from redrafter_trt import tokens
    from redrafter_trt.train import TrainConfig, data
    from redrafter_trt.train.dataset import build_examples

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = QWEN25 if template == "turn by turn" else QWEN3_TOOLS
    renders, real = [], tokens.render_chat

    def counted(tokenizer, messages, *args):  # the record's renders, not the template's probes
        renders.append(OPENAI_TOOLS["messages"][1] in messages)
        return real(tokenizer, messages, *args)

    monkeypatch.setattr(tokens, "render_chat", counted)
    monkeypatch.setattr(data, "render_chat", counted)
    (example, *more), _ = data.encode_answers(tok, conversation_of(OPENAI_TOOLS), 10_000)
    assert bool(more) == (template == "answer by answer")
    once, renders[:] = sum(renders), []
    assert data.rendering(tok, conversation_of(OPENAI_TOOLS), by_answer=bool(more)).by_answer == bool(more)
    again, renders[:] = sum(renders) if more else 0, []  # the answers rendered again, without the check's
    path = tmp_path / "agent.jsonl"
    path.write_text(json.dumps(OPENAI_TOOLS) + "\n")
    cfg = TrainConfig(base=tmp_path, data=[path], output=tmp_path / "out", eval_examples=0, max_seq_len=10_000)
    train, _ = build_examples(cfg, tok, None, tmp_path / "c", torch.float32)
    assert sum(renders) == once + again and train[0].ids == example.ids, (sum(renders), once, again)
    assert again < once  # the check's failed render prefix by prefix is not repeated


def test_a_rendering_kept_until_encoding_holds_no_text_per_answer():
    """What `to_train` keeps of a tool-calling conversation's rendering until it is encoded: its one text prefix by
    prefix; answer by answer only that it renders so (`encode_answers` renders those answers again)."""
    from redrafter_trt.train.data import Rendering

    whole = Rendering((("text", [(0, 2)]),), by_answer=False)
    assert whole.light() is whole
    assert Rendering((("a", [(0, 1)]), ("ab", [(1, 2)])), by_answer=True).light() == Rendering((), by_answer=True)


def test_a_glaive_call_whose_python_literal_is_no_json_is_skipped_with_a_warning(tmp_path, caplog):
    """glaive's calls are read as Python literals too (single-quoted JSON), which also give sets and bytes that no
    chat template's `tojson` writes: read_all stopped in a TypeError traceback ('Object of type set is not JSON
    serializable') telling duplicates apart. Such a record is skipped with the others that are no tool call."""
    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import read_all

    path = tmp_path / "glaive.jsonl"
    calls = ["{'name': 'f', 'arguments': {'a': {1, 2}}}", "{'name': 'f', 'arguments': {'a': b'x'}}",
             "{'name': 'f', 'arguments': '{\"a\": 1}'}"]
    path.write_text("".join(json.dumps({"conversations": [{"from": "human", "value": "Q"},
                                                          {"from": "function_call", "value": v}]}) + "\n"
                            for v in calls))
    with caplog.at_level("WARNING"):
        (conv,) = read_all(TrainConfig(base=tmp_path, data=[path], output=tmp_path / "out"))
    assert conv.messages[1]["tool_calls"] == [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]
    assert f"{path}: skipped 2 of 3 records with nothing to train on: `conversations` message 2 " \
           f"(function_call) is not a tool call's JSON" in caplog.text, caplog.text


def test_a_glaive_record_written_with_role_and_content_reads_as_with_from_and_value():
    """A CALLS turn's JSON is its `value`, or its `content` in a record written with OpenAI's keys ({"role":
    "function_call", "content": ...}), as every other turn's text is. That content was also read as the answer's
    text, so the call was written (and trained) twice, as JSON text and as the template's tool call; a mutant
    reading `value` alone survived every test."""
    from test_prompts import GLAIVE

    keyed = {**GLAIVE, "conversations": [{"role": m["from"], "content": m["value"]} for m in GLAIVE["conversations"]]}
    assert conversation_of(keyed).messages == conversation_of(GLAIVE).messages
    assert conversation_of(keyed).messages[1]["tool_calls"][0]["function"]["name"] == "convert_currency"


def test_a_tool_call_json_cannot_read_is_read_as_text_not_a_traceback(tmp_path, caplog):
    """json reads nested lists recursively, and refuses a number over 4300 digits with a ValueError that is no
    JSONDecodeError: a glaive call nested that deep stopped train in a RecursionError traceback, and an OpenAI call's
    arguments holding such a number refused its record ('not {"type": "function", ...}'), where serve once kept
    them as the text they are. The call is no tool call's JSON (skipped, saying so); the arguments stay text."""
    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import read_all

    deep = {"conversations": [{"from": "human", "value": "Q"},
                              {"from": "function_call", "value": "[" * 100_000 + "]" * 100_000}]}
    digits = "1" * 5000
    long = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": digits}}]}]}
    path = tmp_path / "agent.jsonl"
    path.write_text(json.dumps(deep) + "\n" + json.dumps(long) + "\n")
    with caplog.at_level("WARNING"):
        (conv,) = read_all(TrainConfig(base=tmp_path, data=[path], output=tmp_path / "out"))
    assert conv.messages[1]["tool_calls"] == [{"type": "function", "function": {"name": "f", "arguments": digits}}]
    assert f"{path}: skipped 1 of 2 records with nothing to train on: `conversations` message 2 " \
           f"(function_call) is not a tool call's JSON" in caplog.text, caplog.text


def test_a_messages_fields_of_another_kind_are_left_out_not_given_to_the_template():
    """A speaker's `name`, a tool result's `name` and `tool_call_id`, and a call's `id` reach the chat template only
    as strings (serve refuses another kind of `name` or `tool_call_id`, and reads a null one as none): a 5 or a null
    is left out of the record's messages, not rendered. A call without "type" is a function's, as serve reads it."""
    record = {"messages": [
        {"role": "user", "content": "Weather?", "name": 5},
        {"role": "assistant", "content": None, "name": None, "tool_calls": [
            {"id": None, "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "content": "18C", "tool_call_id": 5, "name": None},
        {"role": "assistant", "content": "It is 18C.", "name": ["bot"]}]}
    assert conversation_of(record).messages == (
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {}}}]},
        {"role": "tool", "content": "18C"}, {"role": "assistant", "content": "It is 18C."})


# ChatML writing a message's speaker (`name`) before its text, and its tool calls after it
NAMED = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}{% if m['name'] is defined %}"
         "{{ m['name'] + ': ' }}{% endif %}{{ m['content'] }}{% for c in m['tool_calls'] or [] %}"
         "{{ '<call>' + c['function']['name'] + '</call>' }}{% endfor %}{{ '<|im_end|>\n' }}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_train_and_run_render_a_messages_name_as_serve_does(tmp_path):
    """OpenAI's `name` (who speaks) reached serve's chat template on every turn, train's only on a tool's result:
    a template writing it trained the drafter on text the base never reads in serving. train's text of a record, and
    run's of its prompt, are now serve's of the same history, names and all."""
    from types import SimpleNamespace

    from redrafter_trt.serve_backend import ReferenceBackend
    from redrafter_trt.serve_request import parse
    from redrafter_trt.tokens import chat_text

    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    history = [{"role": "system", "content": "Be brief.", "name": "rules"},
               {"role": "user", "content": "Weather?", "name": "ann"},
               {"role": "assistant", "content": None, "name": "bot", "tool_calls": [
                   {"id": "c0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
               {"role": "tool", "content": "18C", "tool_call_id": "c0", "name": "get_weather"},
               {"role": "assistant", "content": "It is 18C.", "name": "bot"},
               {"role": "user", "content": "Thanks!", "name": "ann"}]
    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = NAMED
    serve = SimpleNamespace(tokenizer=tok)

    def served(messages):
        request = parse({"messages": messages, "tools": [weather]}, chat=True, model_name="m", max_output_len=8,
                        tool_parser="qwen3")
        return ReferenceBackend.encode_chat(serve, request.prompts[0], tools=request.tools)

    record = {"messages": history, "tools": [weather]}
    assert list(encode(tok, conversation_of(record), 10_000).ids) == served(history)
    prompt = prompt_of(record)  # run --input-file's: the turns before the first answer
    assert tok(chat_text(tok, prompt), add_special_tokens=False)["input_ids"] == served(history[:2])
    assert "ann: Weather?" in chat_text(tok, prompt)
