"""`redrafter-trt run`: a real run on SmolLM2 (printed outputs, stats line, JSON keys, equal to the Python API),
and every kind of bad input exits 2 with one line and no traceback."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from click.testing import CliRunner

from redrafter_trt import runtime as rt
from redrafter_trt.cli import main
from test_prompts import OPENAI_TOOLS
from test_runtime_support import (checkpoint, one_thread, smollm2_checkpoint,  # noqa: F401
                                  tiny_sampling_checkpoint)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smol_ckpt(smollm2):
    return smollm2_checkpoint(smollm2)


def invoke(*args):
    return CliRunner().invoke(main, ["run", *map(str, args)])


@pytest.fixture(scope="module")
def tiny_sampling(tmp_path_factory):
    """(base, checkpoint): a tiny Llama with a byte tokenizer, converted with greedy=False (a sampling engine's)."""
    return tiny_sampling_checkpoint(tmp_path_factory.mktemp("seeded"))


def test_run_prints_and_writes_json(smollm2, smol_ckpt, tmp_path):
    out = tmp_path / "out.json"
    res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "What is 2+2?",
                 "--input-text", "Name a color.", "--chat", "--max-output-len", 6, "--batch-size", 2,
                 "--num-beams", 2, "--draft-len", 2, "--output-json", out)
    assert res.exit_code == 0, res.output
    assert res.output.count("[output]") == 2 and "mean tokens/step" in res.output
    data = json.loads(out.read_text())
    assert set(data["stats"]) >= {"mean_tokens_per_step", "tokens_per_second", "total_new_tokens", "wall_seconds"}
    first = data["results"][0]
    assert set(first) == {"prompt", "messages", "prompt_ids", "output_ids", "text", "steps", "tokens_per_step"}
    assert first["prompt"] == "What is 2+2?" and len(first["output_ids"]) <= 6
    from redrafter_trt import __version__

    producer = data["producer"]  # which version, options and checkpoint made these outputs
    assert (producer["version"], producer["command"]) == (__version__, "run")
    assert producer["options"]["num_beams"] == 2 and producer["options"]["batch_size"] == 2
    assert producer["sources"] == {"checkpoint": str(smol_ckpt.resolve()), "tokenizer": str(smollm2.resolve())}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True,
                                  tokenize=True, return_dict=False)
    api = rt.generate(rt.load(smol_ckpt), [list(ids)], 6, num_beams=2, draft_len=2, eos_token_id=tok.eos_token_id)
    assert first["output_ids"] == api.output_ids[0]


def test_chat_on_a_chatml_base_goes_on_past_its_end_of_turn_as_transformers_does(smollm2, smol_ckpt, tmp_path):
    """run stops at the tokenizer's EOS and generation_config.json's eos_token_id, as transformers' generate does; not
    at the chat template's end of turn (train --distill's answers alone end there). SmolLM2's tokenizer made a Qwen2
    base's (EOS <|endoftext|>): its answer to 'Say hi.' closes its turn with <|im_end|> and goes on into a user turn
    of its own, token for token transformers'."""
    import torch

    from test_runtime_support import hf_model

    tok = tmp_path / "chatml-base"
    shutil.copytree(smollm2, tok, ignore=shutil.ignore_patterns("*.safetensors"))
    for name, key in (("tokenizer_config.json", "eos_token"), ("generation_config.json", "eos_token_id")):
        raw = json.loads((tok / name).read_text())
        (tok / name).write_text(json.dumps({**raw, key: "<|endoftext|>" if key == "eos_token" else 0}))
    out = tmp_path / "out.json"
    res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", tok, "--chat", "--input-text", "Say hi.",
                 "--max-output-len", 30, "--num-beams", 2, "--draft-len", 2, "--output-json", out)
    assert res.exit_code == 0, res.output
    ids = json.loads(out.read_text())["results"][0]["output_ids"]
    end_of_turn = 2  # SmolLM2's <|im_end|>
    assert end_of_turn in ids[:-1] and len(ids) == 30
    from transformers import AutoTokenizer

    prompt = torch.tensor([AutoTokenizer.from_pretrained(tok).apply_chat_template(
        [{"role": "user", "content": "Say hi."}], add_generation_prompt=True, tokenize=True, return_dict=False)])
    with torch.no_grad():
        want = hf_model(smollm2).generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30,
                                          do_sample=False, eos_token_id=0, pad_token_id=0)
    assert ids == want[0, prompt.shape[1]:].tolist()


def test_without_generation_config_run_stops_at_config_jsons_eos_ids_as_transformers_does(smollm2, smol_ckpt,
                                                                                             tmp_path):
    """A base folder without generation_config.json: transformers takes `generate`'s eos_token_id from config.json
    (Llama 3.1 lists [<|end_of_text|>, <|eom_id|>, <|eot_id|>] there too), run took the tokenizer's EOS alone and went
    on past an id of that list where transformers stopped."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "out.json"
    args = ("--checkpoint-dir", smol_ckpt, "--chat", "--input-text", "Say hi.", "--max-output-len", 12, "--num-beams",
            2, "--draft-len", 2, "--output-json", out)
    assert invoke(*args, "--tokenizer-dir", smollm2).exit_code == 0
    full = json.loads(out.read_text())["results"][0]["output_ids"]
    stop = full[3]  # a token mid-answer, listed as an EOS id in config.json only
    base = tmp_path / "base"
    shutil.copytree(smollm2, base, ignore=shutil.ignore_patterns("generation_config.json"))
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "eos_token_id": [config["eos_token_id"], stop]}))
    res = invoke(*args, "--tokenizer-dir", base)
    assert res.exit_code == 0, res.output
    ids = json.loads(out.read_text())["results"][0]["output_ids"]
    prompt = torch.tensor([AutoTokenizer.from_pretrained(base).apply_chat_template(
        [{"role": "user", "content": "Say hi."}], add_generation_prompt=True, tokenize=True, return_dict=False)])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False)
    assert ids == want[0, prompt.shape[1]:].tolist() == full[:full.index(stop) + 1]


def test_an_eos_id_past_the_tokenizer_in_generation_config_is_left_out_with_a_warning(smollm2, smol_ckpt, tmp_path,
                                                                                      caplog):
    """A review: once generate refused eos ids outside the vocabulary, a folder whose generation_config.json lists one
    (a fine-tune's added token, the embeddings not resized) was refused by run, naming an eos id the user never
    passed, and serve answered every request 400; before, the id matched nothing and did no harm."""
    base = tmp_path / "base"
    shutil.copytree(smollm2, base)
    gen = json.loads((base / "generation_config.json").read_text())
    (base / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": [2, 49152]}))
    with caplog.at_level("WARNING"):
        res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", base, "--input-text", "Hi", "--max-output-len",
                     3)
    assert res.exit_code == 0, res.output
    assert "lists eos_token_id 49152, past the tokenizer's 49152 tokens: no answer can end on it" in caplog.text


def test_stop_ids_add_the_generation_configs_to_the_tokenizers_eos_and_refuse_a_broken_one_in_a_line(smollm2,
                                                                                                      tmp_path):
    """The tokenizer's EOS stays a stop id beside the generation config's (SmolLM2's <|im_end|>, 2, beside 0), and is
    one alone where neither generation_config.json nor config.json is there. A review: a generation_config.json of
    `[]` was told "eos_token_id is None" (a key it never held); an eos_token_id "2" or [[2]] was a TypeError
    traceback once its ids went unchecked."""
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.tokens import load_tokenizer, stop_ids

    tok_dir = tmp_path / "tok"
    shutil.copytree(smollm2, tok_dir, ignore=shutil.ignore_patterns("*.safetensors"))
    tok = load_tokenizer(str(tok_dir), 49152)
    gen = tok_dir / "generation_config.json"
    gen.write_text(json.dumps({"eos_token_id": 0}))
    assert stop_ids(tok, tok_dir) == [0, 2]
    for text, says in (("[]", " holds a JSON list, not an object"), ('"2"', " holds a JSON string, not an object"),
                       ('{"eos_token_id": "2"}', ": eos_token_id is '2', not a token id or a list of them"),
                       ('{"eos_token_id": [[2]]}', ": eos_token_id is [[2]], not a token id or a list of them")):
        gen.write_text(text)
        with pytest.raises(ConfigError) as e:
            stop_ids(tok, tok_dir)
        assert str(e.value) == f"{gen}{says}: fix it or re-download the model's generation_config.json"
    gen.unlink()
    (tok_dir / "config.json").unlink()
    assert stop_ids(tok, tok_dir) == [2]


def test_input_file_no_draft(smollm2, smol_ckpt, tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"turns": ["Say hi.", "again"]}\n{"question": "Say bye."}\n'
                 + json.dumps(OPENAI_TOOLS) + "\n")  # a tool call answers its prompt
    res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-file", f, "--max-output-len", 3,
                 "--no-draft", "--output-json", tmp_path / "o.json")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "o.json").read_text())
    assert [r["prompt"] for r in data["results"]] == ["Say hi.", "Say bye.", "What's the weather in Paris?"]
    assert all(r["tokens_per_step"] == 1.0 for r in data["results"])


def test_a_run_with_no_decoding_step_says_so_not_that_an_engine_hid_its_histogram(smollm2, smol_ckpt):
    """--max-output-len 1 ends at the prefill: no decoding step, so an empty histogram. The stats line said
    "- (not reported by the engine)" of the reference runtime; only an engine's empty histogram is one it hid."""
    res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "Hi", "--max-output-len", 1)
    assert res.exit_code == 0, res.output
    stats = res.output.strip().splitlines()[-1]
    assert stats.endswith("histogram - (no decoding step after the prefill)"), stats
    from redrafter_trt.cli.run_cmd import stats_line
    from redrafter_trt.runtime.decode import GenerationResult

    engine = GenerationResult(output_ids=[[5, 6, 7]], steps=[2], accepted=[[]], wall_seconds=1.0)
    assert stats_line(engine, engine=True).endswith("histogram - (not reported by the engine)")


def one_line_error(res, *words):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    for w in words:
        assert w in lines[0], lines[0]


def test_a_prompt_that_is_not_text_is_one_line(smollm2, smol_ckpt, tmp_path):
    """Half a surrogate pair (a jsonl escape "\\ud83d" alone, or argv bytes that are not UTF-8, which Python reads as
    lone surrogates) reached the tokenizer: a TypeError traceback. Now one line naming the line or the option."""
    base = ["--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--max-output-len", 2]
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "Hi"}\n{"prompt": "cut \\ud83d"}\n')
    one_line_error(invoke(*base, "--input-file", f), f"{f} line 2: `prompt` holds half a surrogate pair")
    one_line_error(invoke(*base, "--input-text", "Hi", "--input-text", "caf\udce9"),
                   "--input-text holds half a surrogate pair ('\\udce9' at character 3), not text: pass UTF-8 text")


def test_another_tp_names_only_tp_sizes_convert_takes(smollm2, smol_ckpt):
    """`--tp 2` on a tp-1 SmolLM2 checkpoint said to convert again with --tp-size 2, which convert refuses (2 does
    not divide its 9 heads): the sizes named are convert's own (1 or 3)."""
    base = ["--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "hi"]
    one_line_error(invoke(*base, "--tp", 2), "--tp 2 differs from the checkpoint's tp_size 1: pass --tp 1, or convert "
                   "again with --tp-size 3 (tp 2 does not split this model)")
    one_line_error(invoke(*base, "--tp", 3), "pass --tp 1, or convert again with --tp-size 3")


def test_bad_inputs(smollm2, smol_ckpt, tmp_path, tiny_llama, tiny_drafter):
    base = ["--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2]
    one_line_error(invoke(*base, "--input-text", "hi", "--num-beams", 4), "--num-beams")
    one_line_error(invoke(*base, "--input-text", "hi", "--draft-len", 4), "--draft-len")
    one_line_error(invoke(*base, "--input-text", "hi", "--tp", 2), "--tp 2")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    one_line_error(invoke(*base, "--input-file", empty), "no prompts")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": "ok"}\n{"prompt": \n')
    one_line_error(invoke(*base, "--input-file", bad), "line 3")
    one_line_error(invoke(*base), "--input-text")
    # a broken generation_config.json beside the tokenizer was a traceback (JSONDecodeError / TypeError)
    tok = tmp_path / "tok"
    shutil.copytree(smollm2, tok, ignore=shutil.ignore_patterns("*.safetensors"))
    for text, needle in (("{bad", "generation_config.json is not valid JSON"),
                         ('{"eos_token_id": "2"}', "eos_token_id is '2', not a token id"),
                         ("[]", "generation_config.json holds a JSON list, not an object")):
        (tok / "generation_config.json").write_text(text)
        one_line_error(invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", tok, "--input-text", "hi"), needle)
    # a tokenizer that does not belong to the checkpoint (tiny model: 256 tokens)
    tiny = checkpoint(tiny_llama, tiny_drafter, 1)
    one_line_error(invoke("--checkpoint-dir", tiny, "--tokenizer-dir", smollm2, "--input-text", "hi"), "vocab_size")
    # a checkpoint inspect rejects: a rank file missing
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    (broken / "rank0.safetensors").unlink()
    one_line_error(invoke("--checkpoint-dir", broken, "--tokenizer-dir", smollm2, "--input-text", "hi"), "not valid")
    # these said "... is not a folder: ... then re-convert it" (a review)
    one_line_error(invoke("--checkpoint-dir", tmp_path / "nope", "--tokenizer-dir", smollm2, "--input-text", "hi"),
                   "does not exist", "the folder `redrafter-trt convert` wrote")
    for folder, kind in ((tiny_llama, "a Hugging Face model"), (tiny_drafter, "an Apple ReDrafter drafter")):
        one_line_error(invoke("--checkpoint-dir", folder, "--tokenizer-dir", smollm2, "--input-text", "hi"),
                       f"holds {kind}, not a ReDrafter checkpoint", "redrafter-trt convert")
    one_line_error(invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", tmp_path / "nope", "--input-text", "hi"),
                   "tokenizer folder", "does not exist")
    one_line_error(invoke(*base, "--input-text", "hi", "--output-json", tmp_path / "nope" / "o.json"),
                   "does not exist")
    one_line_error(invoke("--engine-dir", tmp_path, "--checkpoint-dir", tiny, "--tokenizer-dir", smollm2,
                          "--input-text", "hi"), "exactly one")
    # --compile: one CPU rank of a tp=1 checkpoint, the reference runtime only
    one_line_error(invoke("--checkpoint-dir", checkpoint(tiny_llama, tiny_drafter, 2), "--tokenizer-dir", smollm2,
                          "--input-text", "hi", "--compile"), "tp=2", "drop --compile")
    one_line_error(invoke("--engine-dir", tmp_path, "--tokenizer-dir", smollm2, "--input-text", "hi", "--compile"),
                   "--compile works with --checkpoint-dir only")
    one_line_error(invoke(*base, "--input-text", "hi", "--device", "cuda", "--compile"))
    # an engine batches and places itself: options it would ignore are refused, even at their defaults
    for flag, value in (("--batch-size", "4"), ("--batch-size", "1"), ("--device", "cpu"), ("--sampling-rule", "exact")):
        one_line_error(invoke("--engine-dir", tmp_path, "--tokenizer-dir", smollm2, "--input-text", "hi", flag, value),
                       f"{flag} works with --checkpoint-dir only")
    one_line_error(invoke(*base, "--input-text", "hi", "--no-draft", "--num-beams", "2"), "drop them with --no-draft")
    # from a preset: what differs from the default is refused with an engine; a shared key at its default is not
    # (the shipped CPU preset's top-level `device: cpu`), nor a shared num-beams with --no-draft (it is convert's too)
    preset = tmp_path / "p.yaml"
    preset.write_text("device: cpu\nrun: {compile: false, batch-size: 4}\n")
    one_line_error(invoke("--config", preset, "--engine-dir", tmp_path, "--tokenizer-dir", smollm2, "--input-text", "hi"),
                   "--batch-size works with --checkpoint-dir only")
    preset.write_text("device: cpu\nrun: {compile: false, no-draft: false}\n")
    res = invoke("--config", preset, "--engine-dir", tmp_path, "--tokenizer-dir", smollm2, "--input-text", "hi")
    assert "works with --checkpoint-dir only" not in res.output, res.output
    preset.write_text("num-beams: 1\n")
    res = invoke("--config", preset, *base, "--input-text", "hi", "--no-draft", "--max-output-len", "2")
    assert res.exit_code == 0, res.output


def test_a_presets_chat_with_a_tokenizer_without_a_template_names_the_preset(smollm2, smol_ckpt, tmp_path):
    """An instruct preset's `run: {chat: true}` beside a base model's tokenizer (no chat template) was refused with
    'leave out --chat', a flag nobody typed (and leaving it out changes nothing); it names the preset and --no-chat,
    which runs."""
    tok = tmp_path / "tok"
    shutil.copytree(smollm2, tok, ignore=shutil.ignore_patterns("*.safetensors", "chat_template.jinja"))
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tok / "tokenizer_config.json").write_text(json.dumps(config))
    preset = tmp_path / "p.yaml"
    preset.write_text("run: {chat: true}\n")
    base = ["--config", preset, "--checkpoint-dir", smol_ckpt, "--tokenizer-dir", tok, "--input-text", "hi",
            "--max-output-len", 2]
    one_line_error(invoke(*base), "the --config preset sets chat, but this tokenizer has no chat template: pass "
                                  "--no-chat")
    one_line_error(invoke(*base, "--chat"), "(--chat) but this tokenizer has none: leave out --chat")
    res = invoke(*base, "--no-chat")
    assert res.exit_code == 0, res.output


def test_the_checkpoints_greedy_mode_decides_as_in_its_engine(smollm2, smol_ckpt, tiny_sampling, tmp_path, caplog):
    """A greedy checkpoint decodes greedily whatever --temperature says (with a warning), as its engine and `serve`
    do; a sampling one refuses temperature 0, as its engine would sample at 1.0."""
    def output(*extra):
        out = tmp_path / "out.json"
        res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "Name a color.",
                     "--max-output-len", 8, "--output-json", out, *extra)
        assert res.exit_code == 0, res.output
        return json.loads(out.read_text())["results"][0]["output_ids"]

    with caplog.at_level("WARNING"):
        assert output("--temperature", 1.5, "--seed", 3) == output()
    assert "is ignored" in caplog.text
    base, sampling = tiny_sampling
    res = invoke("--checkpoint-dir", sampling, "--tokenizer-dir", base, "--input-text", "Hi", "--max-output-len", 4)
    assert res.exit_code == 2 and "pass a positive --temperature" in res.output
    res = invoke("--checkpoint-dir", sampling, "--tokenizer-dir", base, "--input-text", "Hi", "--max-output-len", 4,
                 "--no-draft")
    assert res.exit_code == 0, res.output
    res = invoke("--checkpoint-dir", sampling, "--tokenizer-dir", base, "--input-text", "Hi", "--max-output-len", 4,
                 "--temperature", 0.7, "--sampling-rule", "trtllm")
    assert res.exit_code == 0 and "mean tokens/step" in res.output, res.output
    res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "Hi", "--sampling-rule",
                 "trtllm")
    assert res.exit_code == 2 and "--sampling-rule" in res.output and "Traceback" not in res.output


def test_output_json_records_the_temperature_the_run_used(smollm2, smol_ckpt, tmp_path):
    """A greedy checkpoint ignores --temperature 0.7 (with a warning) and decodes greedily, but --output-json's
    producer recorded 0.7; it records 0.0, what was used."""
    out = tmp_path / "out.json"
    res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "Hi", "--max-output-len", 1,
                 "--temperature", 0.7, "--output-json", out)
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["producer"]["options"]["temperature"] == 0.0


def test_a_seeded_sample_is_the_prompts_own_whatever_is_batched_beside_it(tiny_sampling, tmp_path_factory):
    """`run --seed` drew a batch's rows from one generator seeded --seed + b, so a prompt's sampled answer changed
    with --batch-size, with its order in the file and with the prompts beside it, where an engine seeds every request
    alike. Each prompt now samples from its own generator seeded --seed: the same answer alone, in any batch, in any
    order, and the answer --no-draft draws (the exact rule; `--sampling-rule trtllm`'s tokens depend on the drafts,
    which a batch's rounding may change at a near-tie)."""
    from test_bench import PROMPTS

    base, sampling = tiny_sampling
    out = tmp_path_factory.mktemp("out") / "out.json"

    def answers(order, *extra):
        texts = [a for i in order for a in ("--input-text", PROMPTS[i])]
        res = invoke("--checkpoint-dir", sampling, "--tokenizer-dir", base, *texts, "--max-output-len", 16,
                     "--temperature", 1, "--seed", 3, "--output-json", out, *extra)
        assert res.exit_code == 0, res.output
        return {i: r["output_ids"] for i, r in zip(order, json.loads(out.read_text())["results"])}

    together = answers([0, 1, 2])
    assert answers([2, 1, 0], "--batch-size", 2) == together
    assert answers([1]) == {1: together[1]}
    assert answers([0, 1, 2], "--no-draft") == together


def test_runs_own_refusals_name_its_flags_where_the_python_api_names_keywords(smollm2, smol_ckpt, monkeypatch):
    """generate and load name the keywords a Python caller wrote (`draft_len=99`, `device='cuda'`); run checks its
    options before calling them and names its flags, as before (runtime.RUN)."""
    import torch

    monkeypatch.setattr(rt, "load", lambda *a, **k: pytest.fail("the weights were loaded"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    base = ("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "hi")
    for args, says in ((("--draft-len", 99), "error: --draft-len 99 is outside 0..3 (the checkpoint's "
                                             "redrafter_draft_len_per_beam): pass at most 3, or reconvert with "
                                             "--draft-len 99"),
                       (("--num-beams", 99), "error: --num-beams 99 is outside 1..3 (the checkpoint's "
                                             "redrafter_num_beams): pass at most 3, or reconvert with --num-beams 99"),
                       (("--temperature", 1e-7, "--no-draft"), "error: --temperature 1e-07 is negative, below 1e-05 "
                                                               "or not finite: use 0 for greedy"),
                       (("--device", "cuda"), "error: --device cuda requested but no CUDA device is available: use "
                                              "--device cpu"),
                       (("--device", "cuda", "--compile"), "error: --compile runs the layers of a tp=1 float32 "
                                                           "checkpoint on one CPU (here tp=1, float32, cuda): drop "
                                                           "--compile")):
        res = invoke(*base, *args)
        one_line_error(res, says)
        assert res.output.startswith(says), res.output


def test_a_prompt_too_long_or_a_tiny_temperature_is_refused_before_the_weights_load(smollm2, smol_ckpt, monkeypatch):
    """A prompt + --max-output-len beyond the positions was found by generate after the weights had loaded (seconds
    for SmolLM2, minutes for an 8B model on a CPU)."""
    monkeypatch.setattr(rt, "load", lambda *a, **k: pytest.fail("the weights were loaded"))
    one_line_error(invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "hi",
                          "--max-output-len", 8192), "prompt + 8192 new tokens exceed the model's 8192 positions")
    # so is a temperature below the runtime's floor (found by generate, after the weights)
    one_line_error(invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "hi",
                          "--temperature", "1e-7", "--no-draft"), "below 1e-05")


def test_an_engine_and_a_tokenizer_of_another_model_are_refused(smollm2, tmp_path):
    """As with a checkpoint: the engine keeps the checkpoint's vocab_size, and a tokenizer of another model (49152
    tokens against 32000 here) would feed the engine ids it has no embedding rows for, or the wrong ones."""
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({
        "version": "1.2.0",
        "pretrained_config": {"architecture": "ReDrafterForLLaMALM", "vocab_size": 32000, "redrafter_num_beams": 5,
                              "redrafter_draft_len_per_beam": 5, "redrafter_greedy_search": True,
                              "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1}},
        "build_config": {"max_batch_size": 8, "max_input_len": 1024, "max_seq_len": 2073, "max_draft_len": 25,
                         "max_num_tokens": 8192}}))
    (engine / "rank0.engine").write_bytes(b"")
    one_line_error(invoke("--engine-dir", engine, "--tokenizer-dir", smollm2, "--input-text", "hi"),
                   "has 49152 tokens but the model's vocab_size is 32000")


def test_log_prob_files_with_an_engine_are_refused_before_it_loads(smollm2, tmp_path):
    """A review of TensorRT-LLM's source: an explicit_draft_tokens engine's decoding layer writes no log-probabilities
    and the executor hands back the zeroed buffer at each output's length; run asked for them and would have written
    those zeros as an answer."""
    engine = tmp_path / "engine"
    engine.mkdir()  # nothing in it: the refusal comes before the engine is read
    for option in ("--output_log_probs_npy", "--output-cum-log-probs-npy"):
        one_line_error(invoke("--engine-dir", engine, "--tokenizer-dir", smollm2, "--input-text", "hi", option,
                              tmp_path / "lp.npy"), f"{option.replace('_', '-')} needs --checkpoint-dir: a ReDrafter "
                                                    f"engine computes no")
    assert not (tmp_path / "lp.npy").exists()
    # a preset's was named as both flags, typed by nobody
    preset = tmp_path / "p.yaml"
    preset.write_text(f"run:\n  output-log-probs-npy: {tmp_path / 'lp.npy'}\n")
    one_line_error(invoke("--config", preset, "--engine-dir", engine, "--tokenizer-dir", smollm2, "--input-text", "hi"),
                   "the --config preset's output-log-probs-npy needs --checkpoint-dir")


@pytest.mark.parametrize("first, second", [("--output_log_probs_npy", "--output-cum-log-probs-npy"),
                                           ("--output-json", "--output-log-probs-npy")])
def test_two_outputs_naming_one_file_are_refused(smollm2, smol_ckpt, tmp_path, first, second):
    """A review: the cumulative array replaced the per-token one under one name, without a word (exit 0)."""
    one_line_error(invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "hi",
                          first, tmp_path / "x.npy", second, tmp_path / "x.npy"),
                   f"{first.replace('_', '-')} and {second} both name")
    assert list(tmp_path.iterdir()) == []


def test_a_log_prob_file_named_without_npy_is_checked_under_the_name_it_is_written(smollm2, smol_ckpt, tmp_path):
    """An audit: OutputFile's checks looked at the name as typed, before `.npy` was added. `--output-cum-log-probs-npy
    cum` with a folder `cum.npy` generated whole, wrote lp.npy, then failed (`.cum.npy.partial-...: Is a directory`,
    exit 2, the JSON never written): refused up front now, as `cum.npy` typed is (a review: as "not a regular file (a
    device, pipe or socket...)" until session 72; a folder now). `lp` with `lp.npy` a link replaced
    the link by a plain file, where `lp.npy` typed writes through it: the file it names is written now, alike."""
    np = pytest.importorskip("numpy")
    (tmp_path / "cum.npy").mkdir()
    base = ["--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "hi", "--max-output-len", 3,
            "--output-json", tmp_path / "o.json"]
    one_line_error(invoke(*base, "--output-log-probs-npy", tmp_path / "lp", "--output-cum-log-probs-npy",
                          tmp_path / "cum"), f"{tmp_path / 'cum.npy'} is a folder: pass a file path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cum.npy"]
    (tmp_path / "cum.npy").rmdir()
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "target.npy").write_bytes(b"")
    (tmp_path / "lp.npy").symlink_to("real/target.npy")
    res = invoke(*base, "--output-log-probs-npy", tmp_path / "lp")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "lp.npy").is_symlink()
    assert np.load(tmp_path / "real" / "target.npy").shape[:2] == (1, 1)


def test_a_log_prob_file_named_without_npy_gets_it_as_run_pys_np_save_gives_it(smollm2, smol_ckpt, tmp_path):
    np = pytest.importorskip("numpy")
    res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "hi",
                 "--max-output-len", 3, "--output_log_probs_npy", tmp_path / "lp", "--output_cum_log_probs_npy",
                 tmp_path / "cum.npy")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cum.npy", "lp.npy"]  # np.load("lp.npy"), as after run.py
    assert np.load(tmp_path / "lp.npy").shape[:2] == (1, 1)


def readme_python_example() -> str:
    """The ```python block of README.md's "Python API" section, as written."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Python API\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readmes_generate_keywords_are_in_the_runtimes_example_call():
    """README lists generate's keywords as given "in redrafter_trt/runtime/__init__.py's docstring": its example call
    showed neither batch_size nor logprobs nor sampling_rule."""
    import inspect
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Python API\n"):]
    listed = re.findall(r"`(\w+)`", re.search(r"the keywords\s+\(([^)]*)\) are", section).group(1))
    assert len(listed) > 5 and set(listed) <= set(inspect.signature(rt.generate).parameters), listed
    doc = rt.__doc__
    call = doc[doc.index("result = generate("):doc.index("result.output_ids")]
    assert [name for name in listed if f"{name}=" not in call] == []


def test_the_readmes_python_example_runs_and_gives_runs_outputs(smollm2, tmp_path, capsys):
    """README's Python API example, run as written on a tiny model (SmolLM2's tokenizer and vocabulary, 2 layers of
    64) with its two paths replaced: it prints an answer per prompt, and its ids are `run --chat`'s for the same
    prompts (the section says so)."""
    from tinymodels import make_drafter, make_hf

    base = make_hf(tmp_path / "base", vocab_size=49152, bias_std=0.02)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (smollm2 / f).exists():
            shutil.copy(smollm2 / f, base / f)
    ckpt = checkpoint(base, make_drafter(tmp_path / "drafter", base), 1)
    code = readme_python_example()
    paths = 'ckpt, base = "ckpt/", "SmolLM2-135M-Instruct/"'
    assert paths in code  # the line this test points at the tiny model
    scope: dict = {}
    exec(code.replace(paths, f"ckpt, base = {str(ckpt)!r}, {str(base)!r}"), scope)
    printed = capsys.readouterr().out.splitlines()
    result = scope["result"]
    assert len(printed) == 3 and all(f"{len(o)} tokens in" in line for o, line in zip(result.output_ids, printed))
    out = tmp_path / "run.json"
    res = invoke("--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--chat", "--input-text", "What is ReDrafter?",
                 "--input-text", "Name three colors.", "--max-output-len", 32, "--output-json", out)
    assert res.exit_code == 0, res.output
    assert [r["output_ids"] for r in json.loads(out.read_text())["results"]] == result.output_ids


def test_run_py_token_id_files_are_sent_as_their_ids(smollm2, smol_ckpt, tmp_path):
    """TensorRT-LLM's run.py reads `--input_file x.csv` (a row of token ids per prompt, what its --output_csv
    writes) and `x.npy` (an int array, pad ids dropped): here the csv was read as JSON and told to be named .txt, which
    ran its digits as text. They go to the runtime as they are, no chat template: the outputs of the same ids typed as
    text, and a bad file is one line naming its row."""
    from transformers import AutoTokenizer

    np = pytest.importorskip("numpy")
    tok = AutoTokenizer.from_pretrained(smollm2)
    rows = [tok("Name a color.")["input_ids"], tok("What is 2+2?")["input_ids"]]
    csv, npy, out = tmp_path / "ids.csv", tmp_path / "ids.npy", tmp_path / "out.json"
    csv.write_text("".join(",".join(map(str, r)) + "\n" for r in rows))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    width = max(map(len, rows))
    np.save(npy, np.array([r + [pad] * (width - len(r)) for r in rows], dtype="int32"))
    base = ("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--max-output-len", 4, "--output-json", out)
    assert invoke(*base, "--input-text", "Name a color.", "--input-text", "What is 2+2?").exit_code == 0
    expected = [r["output_ids"] for r in json.loads(out.read_text())["results"]]
    for path in (csv, npy):
        res = invoke(*base, "--input-file", path)
        assert res.exit_code == 0, res.output
        results = json.loads(out.read_text())["results"]
        assert [r["output_ids"] for r in results] == expected
        assert results[0]["prompt"] == "Name a color." and "[prompt] Name a color." in res.output
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2\n3,x\n")
    one_line_error(invoke(*base, "--input-file", bad), f"{bad} line 2: 'x' is not a token id")
    bad.write_text(f"1,{len(tok) + 5}\n")
    one_line_error(invoke(*base, "--input-file", bad), f"{bad} line 1: token id {len(tok) + 5} is outside")
    one_line_error(invoke(*base, "--input-file", csv, "--chat"), "token ids", "drop --chat")
    np.save(npy, np.array(["a", "b"]))
    one_line_error(invoke(*base, "--input-file", npy), f"{npy} holds <U1, not integer token ids")
    np.save(npy, np.array([{"a": 1}], dtype=object))
    one_line_error(invoke(*base, "--input-file", npy), f"{npy} holds object")


def test_a_token_file_that_is_not_one_is_one_line_before_anything_loads(tmp_path):
    """A .csv cell of a Unicode digit int() cannot read ('²', str.isdigit's) was a ValueError traceback; a .npy
    without the .npy magic bytes (text np.savetxt wrote, a pickle) was called 'a pickled array', numpy's allow_pickle
    error for any file without them. Each is one line naming the file and the fix."""
    np = pytest.importorskip("numpy")
    base = ("--checkpoint-dir", tmp_path / "unread", "--tokenizer-dir", tmp_path, "--max-output-len", 1)
    csv = tmp_path / "sup.csv"
    for cell in ("\u00b2", "\u2460", "\u0663"):
        csv.write_text(f"1,{cell}\n")
        one_line_error(invoke(*base, "--input-file", csv), f"{csv} line 1: {cell!r} is not a token id")
    npy = tmp_path / "ascsv.npy"
    np.savetxt(npy, np.array([[1, 2], [3, 4]]))
    one_line_error(invoke(*base, "--input-file", npy), f"{npy} holds text, not a .npy array (np.savetxt writes text",
                   "np.save(path")
    npy.write_bytes(b"\x80\x04\x95junk")
    one_line_error(invoke(*base, "--input-file", npy), f"{npy} is not a .npy array (it does not start with", "np.save(")
    npy.write_bytes(b"")
    one_line_error(invoke(*base, "--input-file", npy), f"{npy} is not a .npy array (it is empty)")
    np.save(npy, np.array([{"a": 1}], dtype=object))
    one_line_error(invoke(*base, "--input-file", npy), f"{npy} holds objects (a pickled array, not read)")
    # a fuzzing review: a cell past int()'s 4300 digits was a ValueError traceback, and a header claiming a shape
    # the file's bytes cannot hold numpy's _ArrayMemoryError (it allocates the shape before reading)
    csv.write_text("1," + "9" * 5001 + "\n")
    one_line_error(invoke(*base, "--input-file", csv), f"{csv} line 1: a number too long to read: 5001 digits")
    for shape in ((10 ** 9, 10 ** 9), (3, 3)):
        with open(npy, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": shape})
            f.write(bytes(16))
        one_line_error(invoke(*base, "--input-file", npy), f"{npy}'s header says shape {shape} of int64",
                       "but it holds 16 bytes", "np.save(path")
    # a review: an array of no rows (np.zeros((0, 5))) was `max() arg is an empty sequence` from check_positions,
    # where a .csv of blank lines is refused as it is read
    for shape in ((0, 5), (0,), (3, 0)):
        np.save(npy, np.zeros(shape, dtype="int32"))
        one_line_error(invoke(*base, "--input-file", npy), f"input file {npy} holds no token ids", "np.save(path")
    csv.write_text("\n\n")
    one_line_error(invoke(*base, "--input-file", csv), f"input file {csv} holds no token ids")


def test_rival_or_blank_prompts_and_a_token_file_as_output_json_are_refused_before_anything_loads(tmp_path):
    """Each refusal, before the checkpoint is opened (here it does not exist): --input-text beside --input-file, a
    blank --input-text (alone or among others), and an --output-json named as run.py's --output_csv / --output_npy."""
    (tmp_path / "tok").mkdir()
    base = ("--checkpoint-dir", tmp_path / "unread", "--tokenizer-dir", tmp_path / "tok", "--max-output-len", 1)
    prompts = tmp_path / "p.txt"
    prompts.write_text("Hi\n")
    one_line_error(invoke(*base, "--input-text", "Hi", "--input-file", prompts),
                   "pass either --input-text or --input-file, not both")
    for texts in ([""], ["  \t"], ["Hi", " "]):
        one_line_error(invoke(*base, *[a for t in texts for a in ("--input-text", t)]),
                       "--input-text is empty: pass some text")
    for name in ("o.csv", "o.npy", "o.NPY"):
        one_line_error(invoke(*base, "--input-text", "Hi", "--output-json", tmp_path / name),
                       f"--output-json writes JSON, not {(tmp_path / name).suffix}: name it .json")
        assert not (tmp_path / name).exists()


def test_a_dash_after_input_text_is_a_prompt_as_in_run_py(tmp_path):
    """run.py's argparse (nargs='+') takes a '-' alone as a value, never an option: `--input_text A -` is two
    prompts, the second the text '-' (not stdin); here too, '-' first or after another prompt."""
    from redrafter_trt.cli.run_cmd import run

    for typed, want in ((["A", "-"], ("A", "-")), (["-"], ("-",)), (["-", "B"], ("-", "B"))):
        ctx = run.make_context("run", ["--tokenizer-dir", str(tmp_path), "--input-text", *typed])
        assert ctx.params["input_text"] == want, typed


def test_token_ids_equal_to_the_pad_id_are_dropped_from_npy_rows_only(tmp_path):
    """A .npy's rows are padded to one width (run.py drops the pad id from each); a .csv's rows are not, so a pad id in
    one is a token of the prompt, kept."""
    from redrafter_trt.token_files import read_token_rows

    np = pytest.importorskip("numpy")
    csv, npy = tmp_path / "ids.csv", tmp_path / "ids.npy"
    csv.write_text("5,0,6\n0,7\n")
    np.save(npy, np.array([[5, 0, 6], [7, 0, 0]], dtype="int32"))
    assert read_token_rows(csv).ids(0, 10) == [[5, 0, 6], [0, 7]]
    assert read_token_rows(npy).ids(0, 10) == [[5, 6], [7]]


def test_a_token_id_equal_to_the_vocabulary_size_is_outside_it(tmp_path):
    """Ids run from 0 to vocab_size - 1: a .csv holding vocab_size itself is refused naming its line."""
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.token_files import read_token_rows

    csv = tmp_path / "ids.csv"
    csv.write_text("5,9\n")
    assert read_token_rows(csv).ids(None, 10) == [[5, 9]]
    csv.write_text("5,9\n10,6\n")
    with pytest.raises(ConfigError, match=rf"^{csv} line 2: token id 10 is outside the tokenizer's 10 ids \(0-9\): "
                                          r"write ids of this tokenizer$"):
        read_token_rows(csv).ids(None, 10)


def test_a_npy_of_more_than_two_dimensions_is_one_line(tmp_path):
    """A .npy's ids are a row (1-D) or rows (2-D); a (1, 3, 1) array (ids with an extra axis) is one line naming its
    dimensions, not read as prompts."""
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.token_files import read_token_rows

    np = pytest.importorskip("numpy")
    npy = tmp_path / "ids.npy"
    for shape in ((1, 3, 1), (2, 3, 2)):
        np.save(npy, np.arange(int(np.prod(shape)), dtype="int32").reshape(shape))
        with pytest.raises(ConfigError, match=rf"^{npy} holds a 3-D array, not integer token ids \(one prompt a row\): "
                                              r"save the ids as an integer array"):
            read_token_rows(npy)


def test_raw_ids_and_a_short_pickle_are_named_for_what_they_are(tmp_path):
    """ids.tofile's raw bytes (int32s: NUL bytes, though every byte decodes as UTF-8) lack the .npy magic and are no
    text np.savetxt wrote; an object array pickled in fewer bytes than its shape's pointers (1000 Nones) is a pickle,
    not a file cut short."""
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.token_files import read_token_rows

    np = pytest.importorskip("numpy")
    npy = tmp_path / "ids.npy"
    np.array([[5, 6, 7], [8, 9, 10]], dtype="int32").tofile(npy)
    with pytest.raises(ConfigError, match=rf"^{npy} is not a .npy array \(it does not start with the .npy magic"):
        read_token_rows(npy)
    np.save(npy, np.array([None] * 1000, dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match=rf"^{npy} holds objects \(a pickled array, not read\), not integer token "):
        read_token_rows(npy)


def test_a_csv_cells_spaces_are_read_past_as_run_py_reads_them(tmp_path):
    """run.py makes each .csv row np.array(row, dtype='int32'), which reads ' 6' as 6: a .csv written `5, 6` (a space
    after each comma) is the same prompt here."""
    from redrafter_trt.token_files import read_token_rows

    csv = tmp_path / "ids.csv"
    csv.write_text("5, 6\n 7 ,8\t\n")
    assert read_token_rows(csv).ids(0, 10) == [[5, 6], [7, 8]]


def test_a_negative_token_id_in_a_npy_is_refused_before_anything_loads(smollm2, smol_ckpt, tmp_path, monkeypatch):
    """A .npy's ids are int32: one below 0 that is not the pad id (which is dropped) is no token of the tokenizer, and
    is refused naming its row before the weights or the engine load, as one past the vocabulary is."""
    from transformers import AutoTokenizer

    from redrafter_trt.runtime import trtllm

    np = pytest.importorskip("numpy")
    vocab = len(AutoTokenizer.from_pretrained(smollm2))
    monkeypatch.setattr(rt, "load", lambda *a, **k: pytest.fail("the weights were loaded"))
    monkeypatch.setattr(trtllm, "generate_engine", lambda *a, **k: pytest.fail("the engine was loaded"))
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({
        "version": "1.2.0",
        "pretrained_config": {"architecture": "ReDrafterForLLaMALM", "vocab_size": vocab, "redrafter_num_beams": 5,
                              "redrafter_draft_len_per_beam": 5, "redrafter_greedy_search": True,
                              "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1}},
        "build_config": {"max_batch_size": 8, "max_input_len": 1024, "max_seq_len": 2073, "max_draft_len": 25,
                         "max_num_tokens": 8192}}))
    (engine / "rank0.engine").write_bytes(b"")
    npy = tmp_path / "ids.npy"
    np.save(npy, np.array([[5, 6, 7], [8, -3, 9]], dtype="int32"))
    for model in (("--checkpoint-dir", smol_ckpt), ("--engine-dir", engine)):
        one_line_error(invoke(*model, "--tokenizer-dir", smollm2, "--input-file", npy, "--max-output-len", 2),
                       f"{npy} row 2: token id -3 is outside the tokenizer's {vocab} ids (0-{vocab - 1})")


def test_an_answer_ending_on_eos_is_printed_and_written_without_its_text(smollm2, smol_ckpt, tmp_path, monkeypatch):
    """The output ids keep the EOS that ended the answer (as the runtime returned them); the text printed and
    --output-json's `text` are the answer alone, without the EOS token's text (SmolLM2's <|im_end|>)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    answer = tok("Hello there.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert tok.eos_token == "<|im_end|>"
    monkeypatch.setattr(rt, "load", lambda *a, **k: None)
    monkeypatch.setattr(rt, "generate", lambda model, ids, *a, **k: rt.GenerationResult(
        output_ids=[list(answer) for _ in ids], steps=[len(answer)] * len(ids), accepted=[[1] * len(answer)] * len(ids),
        wall_seconds=1.0))
    out = tmp_path / "out.json"
    res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--chat", "--input-text", "Say hi.",
                 "--max-output-len", 20, "--output-json", out)
    assert res.exit_code == 0, res.output
    assert "[output] Hello there.\n" in res.output and "<|im_end|>" not in res.output
    (record,) = json.loads(out.read_text())["results"]
    assert record["output_ids"] == answer and record["text"] == "Hello there."


def test_mean_tokens_per_step_pools_the_prompts_tokens_and_steps(smollm2, smol_ckpt, tmp_path, monkeypatch):
    """The statistics line and stats.mean_tokens_per_step are all new tokens over all steps, as bench's and
    acceptance's are; not the mean of each prompt's tokens per step (a mutation review: that went unseen, every test's
    prompts had answers of one length). One answer ends at EOS after one decoding step, the other runs on with drafts
    accepted: 11 tokens in 5 steps (2.20), where the prompts' own means (1.0 and 3.0) average 2.00."""
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(smollm2).eos_token_id
    monkeypatch.setattr(rt, "load", lambda *a, **k: None)
    monkeypatch.setattr(rt, "generate", lambda model, ids, *a, **k: rt.GenerationResult(
        output_ids=[[42, eos], list(range(100, 109))], steps=[2, 3], accepted=[[1], [4, 4]], wall_seconds=1.0))
    out = tmp_path / "out.json"
    res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "Say hi.", "--input-text",
                 "Count on.", "--max-output-len", 9, "--batch-size", 2, "--output-json", out)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    tokens = sum(len(r["output_ids"]) for r in data["results"])
    steps = sum(r["steps"] for r in data["results"])
    per_prompt = [r["tokens_per_step"] for r in data["results"]]
    assert f"{tokens / steps:.2f}" != f"{sum(per_prompt) / len(per_prompt):.2f}"  # the two means differ here
    assert f"mean tokens/step {tokens / steps:.2f} |" in res.output, res.output
    assert data["stats"]["mean_tokens_per_step"] == pytest.approx(tokens / steps)
    assert data["stats"]["total_new_tokens"] == tokens


def test_run_py_spellings_run_as_ours(smollm2, smol_ckpt, tmp_path):
    """TensorRT-LLM's ReDrafter README runs `run.py --engine_dir ... --tokenizer_dir ... --max_output_len=100
    --input_text "Once upon" "The basic idea of ..."`: every underscore spelling was 'No such option' and a second
    prompt after --input-text 'unexpected extra argument'. run.py's spellings of the options run has are taken (as
    convert takes TensorRT-LLM's), and --input-text takes several prompts, as run.py's nargs='+'."""
    out = tmp_path / "out.json"
    ours = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "Once upon",
                  "--input-text", "What is 2+2?", "--max-output-len", 4, "--seed", 1, "--output-json", out)
    assert ours.exit_code == 0, ours.output
    expected = json.loads(out.read_text())["results"]
    for spelling in (["--tokenizer_dir", smollm2, "--input_text", "Once upon", "What is 2+2?", "--max_output_len=4",
                      "--random_seed", 1],
                     ["--tokenizer-dir", smollm2, "--input-text=Once upon", "What is 2+2?", "--max-output-len", 4,
                      "--seed", 1]):
        res = invoke("--checkpoint-dir", smol_ckpt, *spelling, "--output-json", out)
        assert res.exit_code == 0, res.output
        assert json.loads(out.read_text())["results"] == expected
    one_line_error(invoke("--checkpoint-dir", smol_ckpt, "--engine_dir", tmp_path, "--tokenizer-dir", smollm2,
                          "--input-text", "hi"), "pass exactly one of --checkpoint-dir")
    one_line_error(invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input_file",
                          tmp_path / "gone.txt"), "gone.txt does not exist")


@pytest.mark.parametrize("option, words", [
    (["--num_beams", "2"], ["run.py's --num_beams is beam search", "--num-beams is the drafter's beam count"]),
    (["--top_k", "1"], ["no top-k, top-p or min-p", "--temperature"]),
    (["--top-p", "0.9"], ["no top-k, top-p or min-p"]),
    (["--repetition_penalty", "1.1"], ["no penalties", "the base's own"]),
    (["--kv_cache_enable_block_reuse"], ["block reuse off", "run.py turns it on"]),
    (["--output_logits_npy", "l.npy"], ["no logits", "--output-log-probs-npy"]),
    (["--lora_dir", "lora"], ["merge the adapter into the base"]),
    (["--end_id", "2"], ["stops at the tokenizer's EOS"]),
    (["--output_csv", "o.csv"], ["--output-json", "output_ids"]),
    (["--run_profiling"], ["redrafter-trt bench"]),
    (["--max_input_length", "923"], ["run does not truncate prompts", "refused, naming it"]),
    (["--log_level", "info"], ["redrafter-trt -v run"]),
    (["-v"], ["-v is an option of redrafter-trt", "redrafter-trt -v run"]),
    (["--debug"], ["--debug is an option of redrafter-trt", "redrafter-trt --debug run"]),
])
def test_run_py_options_run_lacks_name_what_to_use(smollm2, smol_ckpt, option, words):
    """click's guesses for run.py's options run does not have misled (--top_k: 'Did you mean --tp?', --end_id:
    '--engine-dir'), and -v after `run` was 'No such option' without saying it goes before the command."""
    res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "hi", *option)
    one_line_error(res, *words)
    assert "Did you mean" not in res.output


def test_num_beams_help_says_it_is_the_drafters_beams_not_beam_search():
    """A run.py user reads --num-beams as beam search (N outputs a prompt); help said only 'Draft beams'."""
    res = CliRunner().invoke(main, ["run", "--help"], terminal_width=200)
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "--num-beams INTEGER RANGE The drafter's beam count (ReDrafter's W), not beam search" in text, text


def test_a_prompt_too_long_is_named_and_told_the_fix_that_can_work(smollm2, smol_ckpt, tmp_path, monkeypatch):
    """'a 8300-token prompt + 2 new tokens exceed the model's 8192 positions: shorten the prompt or ask for fewer new
    tokens' named no prompt of a file of many, and fewer new tokens cannot help a prompt over the positions alone."""
    monkeypatch.setattr(rt, "load", lambda *a, **k: pytest.fail("the weights were loaded"))
    path = tmp_path / "long.txt"
    path.write_text("Hi\n" + " ".join(["hello"] * 8300) + "\n")
    base = ("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--max-output-len", 2)
    res = invoke(*base, "--input-file", path)
    one_line_error(res, f"{path} line 2: a 8301-token prompt + 2 new tokens exceed the model's 8192 positions: "
                        f"shorten it to 8190 tokens")
    assert "fewer" not in res.output
    one_line_error(invoke(*base, "--input-text", "Hi", "--input-text", " ".join(["hello"] * 8191)),
                   "--input-text 2: a 8191-token prompt + 2 new tokens exceed the model's 8192 positions: shorten it "
                   "to 8190 tokens or ask for fewer new tokens (--max-output-len 1 at most)")


def test_sampling_rule_trtllm_on_a_greedy_checkpoint_names_the_greedy_checkpoint(smollm2, smol_ckpt, caplog):
    """`--sampling-rule trtllm --temperature 1` on a greedy checkpoint warned that the temperature is ignored, then was
    refused for lacking 'a --no-greedy checkpoint, a positive --temperature and drafting': the temperature given."""
    with caplog.at_level("WARNING"):
        res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "hi",
                     "--sampling-rule", "trtllm", "--temperature", 1)
    one_line_error(res, "this checkpoint is greedy (redrafter_greedy_search)", "convert with --no-greedy")
    assert "positive --temperature" not in res.output and "is ignored" not in caplog.text
    res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "hi", "--sampling-rule",
                 "trtllm", "--no-draft")
    one_line_error(res, "--no-draft makes none")


def test_output_json_records_the_prompts_ids_and_messages(smollm2, smol_ckpt, tmp_path):
    """run.py's --output_csv keeps each prompt's ids beside its output; --output-json kept the user's text alone: a
    record's system message and the chat template's rendering were lost, so the JSON could not reproduce the prompt.
    Each result holds `prompt_ids` and `messages` (null for a token-id file's). An --output-json named .csv was
    written as JSON under that name."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    path, out = tmp_path / "p.jsonl", tmp_path / "out.json"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name an animal."}]
    path.write_text(json.dumps({"messages": messages}) + "\n")
    base = ("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--max-output-len", 2)
    res = invoke(*base, "--chat", "--input-file", path, "--output-json", out)
    assert res.exit_code == 0, res.output
    (record,) = json.loads(out.read_text())["results"]
    assert record["messages"] == messages and record["prompt"] == "Name an animal."
    assert record["prompt_ids"] == list(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                                return_dict=False))
    csv = tmp_path / "ids.csv"
    csv.write_text("1,504,3\n")
    res = invoke(*base, "--input-file", csv, "--output-json", out)
    assert res.exit_code == 0, res.output
    (record,) = json.loads(out.read_text())["results"]
    assert record["prompt_ids"] == [1, 504, 3] and record["messages"] is None
    one_line_error(invoke(*base, "--input-text", "hi", "--output-json", tmp_path / "out.csv"),
                   "--output-json writes JSON", "name it .json")
    assert not (tmp_path / "out.csv").exists()


def test_log_prob_files_are_transformers_greedy_scores_with_accepted_drafts(smollm2, smol_ckpt, tmp_path,
                                                                            monkeypatch):
    """run.py's --output_log_probs_npy / --output_cum_log_probs_npy: each output token's log-probability under the
    base, equal to the log-softmax of transformers' greedy generate(output_scores=True) although drafts were
    accepted (a drafter copying transformers' answers, corrupted at random depths), in run.py's float32 shapes
    [prompts, 1, longest] zero-padded and [prompts, 1]."""
    np = pytest.importorskip("numpy")
    import torch
    from transformers import AutoTokenizer

    from test_runtime_support import LookupDrafter, hf_model

    texts, new = ["The capital of France is", "Once upon a time"], 10
    tok, hf = AutoTokenizer.from_pretrained(smollm2), hf_model(smollm2)
    answers, scores = [], []
    for text in texts:
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=new, do_sample=False, output_scores=True, return_dict_in_generate=True)
        answers.append(out.sequences[0, len(ids):].tolist())
        logp = torch.log_softmax(torch.cat(out.scores).double(), -1)
        scores.append([float(logp[t, token]) for t, token in enumerate(answers[-1])])
    load = rt.load

    def load_with_lookup_drafter(*args, **kwargs):  # a fresh drafter accepts almost nothing
        model = load(*args, **kwargs)
        sequences = [tok(t)["input_ids"] + a for t, a in zip(texts, answers)]
        return dataclasses.replace(model, drafter=LookupDrafter(sequences, model.config.vocab_size, seed=3))

    monkeypatch.setattr(rt, "load", load_with_lookup_drafter)
    lp, cum, out = tmp_path / "lp.npy", tmp_path / "cum.npy", tmp_path / "out.json"
    res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer_dir", smollm2, "--input_text", *texts,
                 "--max_output_len", new, "--output_log_probs_npy", lp, "--output-cum-log-probs-npy", cum,
                 "--output-json", out)
    assert res.exit_code == 0, res.output
    results = json.loads(out.read_text())["results"]
    assert [r["output_ids"] for r in results] == answers
    assert max(r["tokens_per_step"] for r in results) > 1.5  # drafts were accepted
    lp, cum = np.load(lp), np.load(cum)
    assert lp.dtype == cum.dtype == np.float32 and lp.shape == (2, 1, new) and cum.shape == (2, 1)
    for i, want in enumerate(scores):
        assert lp[i, 0, :len(want)].tolist() == pytest.approx(want, abs=1e-4)
        assert (lp[i, 0, len(want):] == 0).all()
        assert float(cum[i, 0]) == pytest.approx(sum(want), abs=1e-3)


def test_runs_options_reach_the_runtime(smollm2, smol_ckpt, monkeypatch):
    """--seed (and the other generation options) reach the runtime's generate, not their defaults (an audit's mutant
    seed=seed -> seed=0 passed every test); the model is not loaded."""
    from redrafter_trt.errors import ConfigError

    given = {}

    def stop_here(model, ids, max_output_len, **kwargs):
        given.update(kwargs, max_output_len=max_output_len)
        raise ConfigError("stopped here")
    monkeypatch.setattr(rt, "load", lambda *a, **k: None)
    monkeypatch.setattr(rt, "generate", stop_here)
    res = invoke("--checkpoint-dir", smol_ckpt, "--tokenizer-dir", smollm2, "--input-text", "Hi", "--seed", 7,
                 "--num-beams", 2, "--draft-len", 2, "--batch-size", 3, "--max-output-len", 9)
    assert res.exit_code == 2 and "stopped here" in res.output, res.output
    assert {k: given[k] for k in ("seed", "num_beams", "draft_len", "batch_size", "max_output_len")} \
        == {"seed": 7, "num_beams": 2, "draft_len": 2, "batch_size": 3, "max_output_len": 9}


def _option_help(command: str, flag: str) -> str:
    """The help line `command --help` shows for `flag`, as one line (click's defaults and ranges included)."""
    import click

    cmd = main.get_command(click.Context(main), command)
    ctx = click.Context(cmd, info_name=command, parent=click.Context(main, info_name="redrafter-trt"))
    option = next(p for p in cmd.params if flag in p.opts + p.secondary_opts)
    return " ".join(option.get_help_record(ctx)[1].split())


def test_run_options_refused_with_an_engine_say_checkpoint_dir_only():
    """Of the options `run --engine-dir` refuses, only --device said "(--checkpoint-dir only)": --batch-size,
    --sampling-rule, --no-draft and --compile did not, nor --num-beams, --draft-len and --tp, which the engine fixed
    when it was built."""
    from redrafter_trt.cli.run_cmd import FIXED_BY_ENGINE, RUNTIME_ONLY

    unsaid = [flag for flag in RUNTIME_ONLY + FIXED_BY_ENGINE if "--checkpoint-dir only" not in _option_help("run", flag)]
    assert unsaid == []
    assert [flag for flag in FIXED_BY_ENGINE if "fixed by the engine" not in _option_help("run", flag)] == []


@pytest.mark.parametrize("command, flag, words", [
    ("run", "--checkpoint-dir", "exactly one of --checkpoint-dir / --engine-dir"),
    ("run", "--engine-dir", "exactly one of --checkpoint-dir / --engine-dir"),
    ("serve", "--checkpoint-dir", "exactly one of --checkpoint-dir / --engine-dir"),
    ("serve", "--engine-dir", "exactly one of --checkpoint-dir / --engine-dir"),
    ("run", "--input-text", "not with --input-file"),
    ("run", "--input-file", "not with --input-text"),
])
def test_options_that_exclude_each_other_say_so(command, flag, words):
    """run and serve take one of --checkpoint-dir and --engine-dir, run one of --input-text and --input-file, and
    refuse both; their help did not say so."""
    assert words in _option_help(command, flag)


def test_run_temperature_help_says_the_checkpoint_decides_with_the_drafter():
    """--temperature said only "0 = greedy": with the drafter a greedy checkpoint (convert's default) ignores a
    positive one (a warning), and a --no-greedy one refuses 0 (_run_checkpoint), as their engines do."""
    text = _option_help("run", "--temperature")
    assert "0 = greedy" in text and "[default: 0.0]" in text
    assert "a greedy checkpoint or engine ignores a positive temperature" in text, text
    assert "a --no-greedy one needs one above 0" in text, text


@pytest.mark.parametrize("flag", ["--num-beams", "--draft-len", "--tp"])
def test_run_options_left_out_say_the_checkpoints_is_taken(flag):
    """--num-beams, --draft-len and --tp left out take the checkpoint's (check_draft_shape, _run_checkpoint); their
    help showed no default."""
    assert "[default: the checkpoint's]" in _option_help("run", flag)
