"""train --distill: the base's greedy answers, their cache and where they stop (a tiny random chat base)."""

from __future__ import annotations

import pytest
import torch

from test_train_data import CHATML, make_tokenizer
from tinymodels import make_hf


class Scripted(torch.nn.Module):
    """An lm_head that says `script`, one token a step (its last token ever after), whatever the hidden state."""

    def __init__(self, vocab: int, script: list[int]):
        super().__init__()
        self.vocab, self.script, self.step = vocab, script, 0

    def forward(self, h):
        tok = self.script[min(self.step, len(self.script) - 1)]
        self.step += 1
        out = torch.zeros(h.shape[0], self.vocab)
        out[:, tok] = 1.0
        return out


def _chatml_base_with_endoftext(folder):
    """Qwen2's base models' stop tokens: <|endoftext|> alone, in the tokenizer and generation_config.json."""
    tok = make_tokenizer(folder, eos="<|endoftext|>")
    make_hf(folder, "llama", tie=True, vocab_size=128, bos_token_id=None, eos_token_id=tok.eos_token_id)
    return tok


def _loader(base, tok, text: str):
    """A loader of the base answering `text` (tokens of the tokenizer, special ones included) to any prompt."""
    from transformers import AutoModelForCausalLM

    script = tok(text, add_special_tokens=False)["input_ids"]

    def load():
        model = AutoModelForCausalLM.from_pretrained(base).eval()
        model.lm_head = Scripted(model.config.vocab_size, script)
        return model
    return load


RUNAWAY = "Hi.<|im_end|>\n<|im_start|>user\nAnd more?<|im_end|>\n"


def test_a_chatml_base_whose_eos_is_endoftext_stops_its_answer_at_im_end(tmp_path):
    """A ChatML base whose EOS is <|endoftext|> (Qwen2's base models: <|im_end|> ends a turn but is no EOS) answered on
    past <|im_end|> into a user turn of its own making, up to --distill-max-new-tokens, and the drafter learnt it; the
    answer ends at the template's end of turn now, as a reference answer's mask does."""
    from redrafter_trt.train.distill import distill, turn_end_ids

    base = tmp_path / "base"
    tok = _chatml_base_with_endoftext(base)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token_id != im_end and turn_end_ids(tok) == {im_end}
    prompt = tok(tok.apply_chat_template([{"role": "user", "content": "Yo"}], add_generation_prompt=True,
                                         tokenize=False), add_special_tokens=False)["input_ids"]
    ((answer, hidden),) = distill(_loader(base, tok, RUNAWAY), tok, [prompt], tmp_path / "c", max_new_tokens=20,
                                  batch_size=1)
    assert tok.decode(answer) == "Hi.<|im_end|>" and hidden.load().shape[0] == len(answer)


def test_an_answer_cached_past_its_turns_end_is_read_up_to_it(tmp_path, monkeypatch):
    """Answers cached before distillation stopped at the end of turn (the same keys) were taken as they were: the
    runaway turns stayed in the training data of every later run on that cache."""
    from redrafter_trt.train import distill as distill_module

    base = tmp_path / "base"
    tok = _chatml_base_with_endoftext(base)
    prompt = [1, 5, 6]
    monkeypatch.setattr(distill_module, "turn_end_ids", lambda tok: set())  # the older code
    ((old, _),) = distill_module.distill(_loader(base, tok, RUNAWAY), tok, [prompt], tmp_path / "c",
                                         max_new_tokens=20, batch_size=1)
    assert len(old) == 20
    monkeypatch.undo()

    def no_load():
        raise AssertionError("answered again, though cached")

    ((answer, hidden),) = distill_module.distill(no_load, tok, [prompt], tmp_path / "c", max_new_tokens=20,
                                                 batch_size=1)
    assert tok.decode(answer) == "Hi.<|im_end|>" and hidden.load().shape[0] >= len(answer)


def test_the_turn_end_is_the_templates_special_token_after_an_answer(tmp_path):
    from redrafter_trt.train.distill import turn_end_ids

    tok = make_tokenizer(tmp_path)
    assert turn_end_ids(tok) == {tok.eos_token_id}  # SmolLM2's: <|im_end|> is its EOS
    tok.chat_template = CHATML.replace("'<|im_end|>' + '\n'", "'\n'")  # no special token after an answer
    assert tok.chat_template != CHATML and turn_end_ids(tok) == set()
    tok.chat_template = CHATML.replace("'<|im_end|>' + '\n'", "'\n### User:'")  # plain text after an answer
    assert "### User:" in tok.apply_chat_template([{"role": "assistant", "content": "A"}], tokenize=False)
    assert turn_end_ids(tok) == set()
    tok.chat_template = "{{ raise_exception('no') }}"
    assert turn_end_ids(tok) == set()


def _tiny(tmp_path):
    from test_train_data import make_chat_base
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = make_chat_base(tmp_path / "base")
    return (lambda: AutoModelForCausalLM.from_pretrained(base).eval()), AutoTokenizer.from_pretrained(base)


def test_index_lines_of_another_shape_are_passed_over(tmp_path):
    """An index line that is JSON but no answer record (an array, a record without its file) was a KeyError or
    TypeError traceback from every later run on that cache."""
    from redrafter_trt.train.distill import distill, read_cache

    load, tok = _tiny(tmp_path)
    folder = tmp_path / "c"
    want = distill(load, tok, [[1, 5, 6]], folder, max_new_tokens=4, batch_size=1)
    with (folder / "answers.jsonl").open("a") as index:
        index.write('{"key": "0123456789abcdef", "answer_ids": [5]}\n[1, 2]\n"text"\n')
    assert len(read_cache(folder)) == 1
    assert [a for a, _ in distill(load, tok, [[1, 5, 6]], folder, max_new_tokens=4, batch_size=1)] == \
        [a for a, _ in want]


def test_a_batch_file_no_index_line_names_is_removed(tmp_path, caplog):
    """Before session 41 a batch's file took its name before its index lines were appended: a run killed between the
    two left a file (the batch's hidden states, GBs for a large base) that no later run read or removed."""
    import shutil

    from redrafter_trt.train.distill import distill

    load, tok = _tiny(tmp_path)
    folder = tmp_path / "c"
    prompts = [[1, 5, 6], [1, 7, 8]]
    want = distill(load, tok, prompts, folder, max_new_tokens=4, batch_size=1)
    named = sorted(f.name for f in folder.glob("hidden-*"))
    orphan = folder / "hidden-0123456789abcdef-89abcdef.safetensors"
    shutil.copy(folder / named[0], orphan)

    def no_load():
        raise AssertionError("answered again, though cached")

    with caplog.at_level("WARNING", logger="redrafter_trt.train.distill"):
        out = distill(no_load, tok, prompts, folder, max_new_tokens=4, batch_size=1)
    assert sorted(f.name for f in folder.glob("hidden-*")) == named and str(orphan) in caplog.text
    assert [a for a, _ in out] == [a for a, _ in want] and all(h.load().shape[0] == len(a) for a, h in out)


def test_cached_hidden_states_of_inf_or_nan_are_computed_again(tmp_path, caplog):
    """A teacher-forced cache holding NaN (written before a base computing them was refused) was reused as it was: the
    first step's loss was NaN and training stopped saying to lower --lr."""
    from transformers import AutoModelForCausalLM

    from redrafter_trt.io import read_safetensors, write_safetensors
    from redrafter_trt.train import features
    from redrafter_trt.train.data import Example

    model = AutoModelForCausalLM.from_pretrained(make_hf(tmp_path / "base", "llama", vocab_size=128)).eval()
    examples = [Example(tuple(range(1, n)), (False,) + (True,) * (n - 2)) for n in (6, 7)]
    want = features.build_features(examples, 2, tmp_path / "cache", "base", lambda: model).hidden
    (path,) = (tmp_path / "cache").glob("hidden-*/*.safetensors")
    rows = read_safetensors(path)["rows"]
    write_safetensors(path, {"rows": rows, "hidden": torch.full_like(want, float("nan"))})
    with caplog.at_level("WARNING"):
        got = features.build_features(examples, 2, tmp_path / "cache", "base", lambda: model).hidden
    assert torch.equal(got, want) and "holds inf or NaN" in caplog.text


def test_distill_says_how_many_conversations_share_a_prompt(tmp_path, caplog):
    """--distill answers each distinct prompt once: a file of several answers per prompt (sampled completions) shrank
    to its prompts without a word, the example count alone smaller than the file's."""
    import json

    from test_train_data import make_chat_base

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples
    from redrafter_trt.tokens import auto_tokenizer

    base = make_chat_base(tmp_path / "base")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n"
                            for p, a in [("Hi", "Hello."), ("Hi", "Hey there."), ("Hi", "Yo."), ("Why?", "Because.")]))
    cfg = TrainConfig(base=base, data=[data], output=tmp_path / "out", cache_dir=tmp_path / "c", distill=True,
                      distill_max_new_tokens=6, max_seq_len=64, eval_examples=0)

    def load():
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(base).eval()

    with caplog.at_level("WARNING"):
        train, _ = build_examples(cfg, auto_tokenizer(base), load, tmp_path / "c", torch.float32)
    assert len(train) <= 2
    assert "2 of 4 conversations share their prompt (after the chat template and any cut) with an earlier one" \
        in caplog.text


def test_a_shared_cache_holds_only_this_runs_answers_in_memory(tmp_path):
    """A cache shared by runs on other data (two drafters for one base, last month's data set) held every answer of
    every run in memory while a run read it: 5000 other answers of 512 tokens took 106 MiB for one prompt."""
    import json
    import tracemalloc

    from redrafter_trt.train.distill import distill

    load, tok = _tiny(tmp_path)
    folder = tmp_path / "c"
    ((want, hidden),) = distill(load, tok, [[1, 5, 6]], folder, max_new_tokens=4, batch_size=1)
    other = json.dumps(list(range(1000, 1512)))
    with (folder / "answers.jsonl").open("a") as index:
        for i in range(5000):
            index.write(f'{{"key": "{i:016x}", "answer_ids": {other}, "file": "{hidden.path.name}"}}\n')

    def no_load():
        raise AssertionError("answered again, though cached")

    tracemalloc.start()
    try:
        ((answer, _),) = distill(no_load, tok, [[1, 5, 6]], folder, max_new_tokens=4, batch_size=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answer == want and peak < 20 * 2 ** 20, f"{peak / 2 ** 20:.0f} MiB"


def test_a_distillation_leaves_the_batch_file_another_hosts_rank_is_writing(tmp_path, monkeypatch):
    """Partials were swept by process id, which names a process of this host only: under torchrun on several nodes the
    ranks share one distill folder, and a rank starting to distill deleted the batch file a rank on another node was
    writing (its id is none here), which then failed in its rename. A folder a run writes into is locked; the others'
    sweeps leave it, and sweep only when no run writes there."""
    import os

    from redrafter_trt import io, output
    from redrafter_trt.train import distill as distill_module

    load, tok = _tiny(tmp_path)
    folder = tmp_path / "c"
    monkeypatch.setattr(output, "_alive", lambda pid: False)  # every writer on another host: its id is none here
    real, partials = io.write_safetensors, []

    def another_rank_starts_meanwhile(path, tensors, *a):
        real(path, tensors, *a)
        if not partials:  # rank 1, on another node, starts its shard while this batch is written
            partials.append(path)
            distill_module.distill(load, tok, [[1, 7, 8]], folder, max_new_tokens=4, batch_size=1, rank=1)
            assert path.exists()

    monkeypatch.setattr(io, "write_safetensors", another_rank_starts_meanwhile)
    ((answer, hidden),) = distill_module.distill(load, tok, [[1, 5, 6]], folder, max_new_tokens=4, batch_size=1)
    assert hidden.load().shape[0] == len(answer) and len(list(folder.glob("hidden-*.safetensors"))) == 2
    killed = folder / f".hidden-0123456789abcdef-01234567.safetensors.partial-{os.getpid() + 1}"
    killed.write_bytes(b"x")  # once no run writes here, a killed run's partial is swept
    distill_module.distill(load, tok, [[1, 9, 10]], folder, max_new_tokens=4, batch_size=1)
    assert not killed.exists()


def test_a_distillation_leaves_a_batch_file_whose_index_lines_another_host_has_not_shown_yet(tmp_path):
    """A rank starting to distill removed every batch file no index line named, lock or not: on a network file system
    a rank on another node renames its batch file at once, but its index lines reach the server when that rank's
    client flushes them, so the file was deleted under a live run (which then failed reading it). Unindexed files are
    now removed only when no run on any host writes into the folder, as partials are."""
    import shutil

    from redrafter_trt.train.chunks import writing_into
    from redrafter_trt.train.distill import distill

    load, tok = _tiny(tmp_path)
    folder = tmp_path / "c"
    distill(load, tok, [[1, 5, 6]], folder, max_new_tokens=4, batch_size=1)
    written = folder / "hidden-0123456789abcdef-89abcdef.safetensors"  # its index lines not yet seen here
    shutil.copy(next(folder.glob("hidden-*")), written)
    with writing_into(folder):  # the other node's rank, distilling on
        distill(load, tok, [[1, 5, 6], [1, 7, 8]], folder, max_new_tokens=4, batch_size=1)
        assert written.exists()
    distill(load, tok, [[1, 5, 6]], folder, max_new_tokens=4, batch_size=1)  # no run writes there: a killed run's
    assert not written.exists()


def test_answers_another_device_wrote_are_reused_saying_which_once(tmp_path, monkeypatch, caplog):
    """Distilled answers recorded nothing of what wrote them: a resume on another device (an A100's answers gone on
    from on an H100) mixed answers whose greedy ties may fall otherwise, without a word. A batch file now records the
    device and the base's dtype; answers another device wrote are reused (the base never runs), with one warning
    naming both devices; those this device wrote, or a batch file recording nothing (before session 46), quietly."""
    import logging

    from redrafter_trt import __version__
    from redrafter_trt.io import read_metadata, read_safetensors, write_safetensors
    from redrafter_trt.train import chunks
    from redrafter_trt.train.distill import distill

    load, tok = _tiny(tmp_path)
    folder, prompts = tmp_path / "c", [[1, 5, 6], [1, 7, 8, 9]]
    monkeypatch.setattr(chunks, "describe_device", lambda device: "cuda NVIDIA A100 (compute capability 8.0)")
    want = distill(load, tok, prompts, folder, max_new_tokens=4, batch_size=1)
    files = sorted(folder.glob("hidden-*.safetensors"))
    assert [read_metadata(f) for f in files] == \
        [{"device": "cpu", "device_name": "cuda NVIDIA A100 (compute capability 8.0)", "dtype": "float32",
          "version": __version__}] * 2  # the version that wrote them, read by none
    never = lambda: pytest.fail("the base ran")  # noqa: E731
    with caplog.at_level(logging.WARNING):
        assert distill(never, tok, prompts, folder, max_new_tokens=4, batch_size=1) == want
    assert "computed on" not in caplog.text
    monkeypatch.setattr(chunks, "describe_device", lambda device: "cuda NVIDIA H100 (compute capability 9.0)")
    with caplog.at_level(logging.WARNING):
        assert distill(never, tok, prompts, folder, max_new_tokens=4, batch_size=1) == want
    assert caplog.text.count("computed on") == 1 and str(folder) in caplog.text
    assert "distilled answers computed on cuda NVIDIA A100 (compute capability 8.0), not cuda NVIDIA H100 " \
        "(compute capability 9.0)" in caplog.text
    caplog.clear()
    for f in files:  # as a version before session 46 wrote them
        write_safetensors(f, read_safetensors(f))
    with caplog.at_level(logging.WARNING):
        assert distill(never, tok, prompts, folder, max_new_tokens=4, batch_size=1) == want
    assert "computed on" not in caplog.text


def _cut(path, keep: int = 40) -> None:
    """`path` cut short, as a copy broken off or a disk filled up on another host leaves it."""
    path.write_bytes(path.read_bytes()[:-keep])


def test_a_truncated_batch_file_is_named_once_and_its_prompts_distilled_again(tmp_path, caplog):
    """A batch file that could not be read (cut short: a partial copy, a disk filled up on another host; bit rot) was
    a safetensors traceback at every later run's start. As an unreadable chunk of hidden states is, it is now named in
    one warning, removed, and its prompts (those alone) distilled again, in the batch they were answered in."""
    import logging

    from redrafter_trt.train.distill import distill

    load, tok = _tiny(tmp_path)
    folder, prompts = tmp_path / "c", [[1, 5, 6], [1, 7, 8, 9], [1, 10], [1, 11, 12, 13, 14]]
    want = distill(load, tok, prompts, folder, max_new_tokens=4, batch_size=2)
    kept = want[0][1].path
    (broken,) = {h.path for _, h in want} - {kept}
    _cut(broken)
    loads = []
    with caplog.at_level(logging.WARNING):
        got = distill(lambda: loads.append(1) or load(), tok, prompts, folder, max_new_tokens=4, batch_size=2)
    assert [a for a, _ in got] == [a for a, _ in want] and all(h.load().shape[0] == len(a) for a, h in got)
    assert loads == [1] and not broken.exists() and kept.exists()
    assert caplog.text.count(str(broken)) == 1 and "distilling its 2 prompts again" in caplog.text, caplog.text
    again = {h.path for _, h in got} - {kept}  # one batch, as before
    assert len(again) == 1 and [h.path == kept for _, h in got] == [h.path == kept for _, h in want]
    assert len((folder / "answers.jsonl").read_text().splitlines()) == 6  # the others were not distilled again
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert distill(lambda: pytest.fail("the base ran"), tok, prompts, folder, max_new_tokens=4,
                       batch_size=2) == got
    assert not caplog.text


def test_a_batch_file_this_process_cannot_open_is_distilled_again_and_left(tmp_path, monkeypatch, caplog):
    """A file that cannot be opened here (another user's, written owner-only; an I/O error of this host) may be one
    another run reads: its prompts are distilled again, but only a file whose bytes are broken is removed."""
    import logging

    from redrafter_trt import io
    from redrafter_trt.train.distill import distill

    load, tok = _tiny(tmp_path)
    folder = tmp_path / "c"
    ((answer, hidden),) = distill(load, tok, [[1, 5, 6]], folder, max_new_tokens=4, batch_size=1)
    real = io.safe_open

    def refused(path, *a, **k):
        if path == str(hidden.path):
            raise PermissionError(13, "Permission denied", path)
        return real(path, *a, **k)

    monkeypatch.setattr(io, "safe_open", refused)
    with caplog.at_level(logging.WARNING):
        ((again, other),) = distill(load, tok, [[1, 5, 6]], folder, max_new_tokens=4, batch_size=1)
    assert again == answer and other.path != hidden.path and other.load().shape[0] == len(answer)
    assert hidden.path.exists() and str(hidden.path) in caplog.text and "Permission denied" in caplog.text


def test_a_batch_file_broken_after_distill_read_it_is_one_line_naming_it_and_the_fix(tmp_path):
    """A batch file broken between distill's start and the read of its hidden states (removed or cut meanwhile) was a
    safetensors traceback: now a TensorError naming the file and what to do (the CLI's exit 2)."""
    from redrafter_trt.errors import TensorError
    from redrafter_trt.train.distill import distill

    load, tok = _tiny(tmp_path)
    ((_, hidden),) = distill(load, tok, [[1, 5, 6]], tmp_path / "c", max_new_tokens=4, batch_size=1)
    _cut(hidden.path)
    with pytest.raises(TensorError) as e:
        hidden.load()
    assert str(hidden.path) in str(e.value) and "delete it and rerun" in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_a_prompt_with_tools_is_not_answered_from_the_same_prompt_without_them(tmp_path):
    """Answers are cached by the prompt's token ids: a record's tools, once not given to the chat template, rendered
    no tokens, and a prompt with tools got the answer cached for it without them. Given to a template that shows them,
    they make another prompt, answered anew."""
    import json

    from test_prompts import WEATHER
    from test_train_data import TOOLED

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import build_examples

    base = tmp_path / "base"
    make_hf(base, "llama", tie=True, vocab_size=128)
    tok = make_tokenizer(base)
    tok.chat_template = TOOLED
    tok.save_pretrained(base)
    answers = {}
    for name, record, answer in [("plain", {"prompt": "Hi"}, "Plain."), ("tooled", {"prompt": "Hi", "tools": [WEATHER]},
                                                                           "Tooled.")]:
        data = tmp_path / f"{name}.jsonl"
        data.write_text(json.dumps(record) + "\n")
        cfg = TrainConfig(base=base, data=[data], output=tmp_path / "out", cache_dir=tmp_path / "c", distill=True,
                          distill_max_new_tokens=8, max_seq_len=128, eval_examples=0)
        (ex,), _ = build_examples(cfg, tok, _loader(base, tok, answer + "<|im_end|>"), tmp_path / "c", torch.float32)
        answers[name] = tok.decode(ex.ids)
    assert answers["plain"].endswith("<|im_start|>assistant\nPlain.<|im_end|>")
    assert answers["tooled"].startswith("<|im_start|>system\nTools: get_weather<|im_end|>\n")
    assert answers["tooled"].endswith("<|im_start|>assistant\nTooled.<|im_end|>")


def _yo_prompt(tok):
    return tok(tok.apply_chat_template([{"role": "user", "content": "Yo"}], add_generation_prompt=True,
                                       tokenize=False), add_special_tokens=False)["input_ids"]


COUNTING = "one two three four<|im_end|>"  # a token a character


def test_a_cached_answer_is_not_reused_for_another_max_new_tokens(tmp_path):
    """An answer cut at --distill-max-new-tokens 3 is no answer for a run asking 30: the cache key holds the cap."""
    from redrafter_trt.train.distill import distill

    base = tmp_path / "base"
    tok = _chatml_base_with_endoftext(base)
    prompt, whole = _yo_prompt(tok), tok(COUNTING, add_special_tokens=False)["input_ids"]
    assert 3 < len(whole) <= 30
    ((short, _),) = distill(_loader(base, tok, COUNTING), tok, [prompt], tmp_path / "c", max_new_tokens=3,
                            batch_size=1)
    ((full, _),) = distill(_loader(base, tok, COUNTING), tok, [prompt], tmp_path / "c", max_new_tokens=30,
                           batch_size=1)
    assert short == whole[:3] and full == whole


def test_an_answer_is_cut_where_prompt_and_answer_reach_max_len(tmp_path):
    """An answer takes at most max_len - len(prompt) new tokens (fewer than max_new_tokens here)."""
    from redrafter_trt.train.distill import distill

    base = tmp_path / "base"
    tok = _chatml_base_with_endoftext(base)
    prompt, whole = _yo_prompt(tok), tok(COUNTING, add_special_tokens=False)["input_ids"]
    ((answer, hidden),) = distill(_loader(base, tok, COUNTING), tok, [prompt], tmp_path / "c", max_new_tokens=30,
                                  batch_size=1, max_len=len(prompt) + 5)
    assert answer == whole[:5] and hidden.load().shape[0] == 5


def test_prompts_of_other_lengths_batched_together_stop_each_at_its_own_max_len(tmp_path):
    """A batch goes on while its shortest prompt has room; each row's answer still stops where its prompt and answer
    reach max_len, as it does answered alone."""
    from redrafter_trt.train.distill import distill

    base = tmp_path / "base"
    tok = _chatml_base_with_endoftext(base)
    short = _yo_prompt(tok)
    long = tok(tok.apply_chat_template([{"role": "user", "content": "Yo, you"}], add_generation_prompt=True,
                                       tokenize=False), add_special_tokens=False)["input_ids"]
    max_len = len(long) + 5
    assert len(short) < len(long) and max_len - len(short) < len(tok(COUNTING)["input_ids"]) - 1
    batched = distill(_loader(base, tok, COUNTING), tok, [short, long], tmp_path / "b", max_new_tokens=30,
                      batch_size=2, max_len=max_len)
    alone = [distill(_loader(base, tok, COUNTING), tok, [p], tmp_path / f"a{k}", max_new_tokens=30, batch_size=1,
                     max_len=max_len)[0][0] for k, p in enumerate((short, long))]
    assert [a for a, _ in batched] == alone
    assert [len(p) + len(a) for p, (a, _) in zip((short, long), batched)] == [max_len, max_len]


def test_a_deleted_batch_file_leaves_its_prompts_to_answer_again_without_a_warning(tmp_path, caplog):
    """An index line whose batch file is gone (deleted by hand, a cache cleaner) names no answer: its prompts are
    among those left to distill, and distilling them says nothing of a file it need not read."""
    from redrafter_trt.train.distill import distill, read_cache, unanswered

    load, tok = _tiny(tmp_path)
    folder, prompts = tmp_path / "c", [[1, 5, 6], [1, 7, 8]]
    want = distill(load, tok, prompts, folder, max_new_tokens=4, batch_size=1)
    gone = folder / next(iter(read_cache(folder).values()))[1]
    gone.unlink()
    left = unanswered(prompts, folder, max_new_tokens=4)
    assert len(left) == 1 and len(read_cache(folder)) == 1
    with caplog.at_level("WARNING"):
        again = distill(load, tok, prompts, folder, max_new_tokens=4, batch_size=1)
    assert [a for a, _ in again] == [a for a, _ in want] and not caplog.records, caplog.text


def test_distill_reads_max_examples_prompts(tmp_path):
    """--distill --max-examples N answers N prompts (of more in the file)."""
    import json

    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import read_all

    tok = make_tokenizer(tmp_path / "tok")
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"P{i}?"}) + "\n" for i in range(5)))
    cfg = TrainConfig(base=tmp_path, data=[data], output=tmp_path / "out", distill=True, max_examples=3)
    assert len(read_all(cfg, tok)) == 3


def test_a_distilled_example_is_prompt_and_answer_up_to_max_len():
    """prompt + answer, the answer's tokens the targets, cut to max_len: an answer reaching it exactly keeps its last
    token; the hidden states start at the prompt's last token."""
    from redrafter_trt.train.dataset import distilled_example

    ex = distilled_example([1, 2], [3, 4, 5], None, 5)
    assert (ex.ids, ex.mask, ex.hidden_from) == ((1, 2, 3, 4, 5), (False, False, True, True, True), 1)
    ex = distilled_example([1, 2], [3, 4, 5], None, 4)
    assert (ex.ids, ex.mask) == ((1, 2, 3, 4), (False, False, True, True))


def test_prompts_are_named_for_little_room_only_below_distill_max_new_tokens(tmp_path):
    """A prompt leaving exactly --distill-max-new-tokens within --max-seq-len has room for its whole answer: it is not
    named; one token less is."""
    from redrafter_trt.train import TrainConfig
    from redrafter_trt.train.dataset import say_little_room

    said = []
    for max_seq_len in (16, 15):
        cfg = TrainConfig(base=tmp_path, data=[tmp_path / "d.jsonl"], output=tmp_path / "out", distill=True,
                          distill_max_new_tokens=6, max_seq_len=max_seq_len)
        say_little_room(lambda *a: said.append((max_seq_len, a[0] % a[1:])), [[0] * 10, [0] * 3], cfg, "prompts")
    assert said == [(15, "1 of 2 prompts leave less than --distill-max-new-tokens 6 answer tokens within "
                         "--max-seq-len 15: their answers stop there")]
