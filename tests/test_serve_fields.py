"""The reference server's "n", "echo" (with the prompt's logprobs, and "max_tokens": 0 to score a prompt alone),
"stream_options", /version, and the refusal of fields that would change the answer, on SmolLM2 over HTTP."""

from __future__ import annotations

import threading

import pytest
import torch

from redrafter_trt.serve_app import App
from redrafter_trt.serve_http import make_server
from test_runtime_support import hf_greedy, one_thread  # noqa: F401
from test_serve import backend, call, hf_answer_logprobs, smol_ckpt, stream, url  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
CHAT = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    """A ReferenceBackend of a sampling checkpoint (greedy=False) of a tiny Llama with a byte tokenizer and a plain
    chat template: what seeds and n decide does not depend on the model, and its near-uniform answers at
    temperature 1 differ from seed to seed."""
    from redrafter_trt.serve_backend import ReferenceBackend
    from test_runtime_support import tiny_sampling_checkpoint

    base, ckpt = tiny_sampling_checkpoint(tmp_path_factory.mktemp("sampler"), CHAT)
    return ReferenceBackend(ckpt, base)


@pytest.fixture(scope="module")
def url32(backend):
    """A server with room for answers that end at EOS (max_output_len 32)."""
    server = make_server(App(backend, "smol", max_output_len=32), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_n_answers_per_prompt_indexed_prompt_times_n(url, backend, smollm2):
    prompts = ["The capital of France is", "Two plus two is"]
    call(url, "/metrics")  # drop what earlier tests left
    out = call(url, "/v1/completions", {"prompt": prompts, "n": 2, "max_tokens": 6})[1]
    assert max(s["numActiveRequests"] for s in call(url, "/metrics")[1]) == 2  # greedy: each prompt decoded once
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    ids = [backend.encode(p) for p in prompts]
    want = [backend.tokenizer.decode(hf_greedy(smollm2, p, 6), skip_special_tokens=True) for p in ids]
    assert [c["text"] for c in out["choices"]] == [want[0], want[0], want[1], want[1]]  # greedy: n equal answers
    assert out["usage"]["prompt_tokens"] == sum(map(len, ids))  # each prompt counted once
    assert out["usage"]["completion_tokens"] == 2 * sum(len(hf_greedy(smollm2, p, 6)) for p in ids)
    once = call(url, "/v1/completions", {"prompt": prompts, "max_tokens": 6})[1]
    assert out["redrafter"] == once["redrafter"]  # the steps run: each prompt decoded once, as n = 1 (was twice)
    chat = call(url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "n": 3,
                                              "max_tokens": 4})[1]
    assert [c["index"] for c in chat["choices"]] == [0, 1, 2]
    events = stream(url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "n": 2,
                                                  "max_tokens": 4})
    for i in range(2):
        parts = [c for e in events for c in e["choices"] if c["index"] == i]
        assert parts[0]["delta"] == {"role": "assistant", "content": ""}  # each answer's first chunk names the role
        assert "".join(c["delta"].get("content", "") for c in parts) == chat["choices"][i]["message"]["content"]


def test_prompts_beyond_max_batch_join_as_rows_end(backend, sampler, smollm2):
    """Five prompts on a server of max batch 2: never more than 2 rows decode at once, the answers are still
    transformers' greedy ones in prompt order; a sampled request's n samples beyond it stay decided by its seed."""
    app = App(backend, "smol", 8)
    prompts = ["The capital of France is", "Two plus two is", "Red, green and", "Once upon a time", "The sun is"]
    app.get("/metrics")
    before, backend.scheduler.max_batch = backend.scheduler.max_batch, 2
    try:
        status, out = app.post("/v1/completions", {"prompt": prompts, "max_tokens": 6})
        assert status == 200 and max(s["numActiveRequests"] for s in app.get("/metrics")[1]) == 2
        want = [backend.tokenizer.decode(hf_greedy(smollm2, backend.encode(p), 6), skip_special_tokens=True)
                for p in prompts]
        assert [c["text"] for c in out["choices"]] == want
    finally:
        backend.scheduler.max_batch = before
    app = App(sampler, "tiny", 8)
    app.get("/metrics")
    before, sampler.scheduler.max_batch = sampler.scheduler.max_batch, 2
    try:
        body = {"prompt": "Once upon a time", "n": 5, "temperature": 1.0, "seed": 3, "max_tokens": 6}
        first, again = app.post("/v1/completions", body)[1], app.post("/v1/completions", body)[1]
        assert [c["text"] for c in first["choices"]] == [c["text"] for c in again["choices"]]
        # any 64-bit seed, as OpenAI and vLLM (-1 was a 400): -1 is 2**63 - 1 here
        status, low = app.post("/v1/completions", {**body, "seed": -1})
        high = app.post("/v1/completions", {**body, "seed": 2 ** 63 - 1})[1]
        assert status == 200 and [c["text"] for c in low["choices"]] == [c["text"] for c in high["choices"]]
        assert max(s["numActiveRequests"] for s in app.get("/metrics")[1]) == 2
    finally:
        sampler.scheduler.max_batch = before


def test_sampling_n_gives_seeded_samples_and_refuses_filters(sampler, backend):
    app = App(sampler, "tiny", 8)
    body = {"prompt": "Once upon a time", "n": 3, "temperature": 1.0, "seed": 11, "max_tokens": 8}
    status, first = app.post("/v1/completions", body)
    again = app.post("/v1/completions", body)[1]
    texts = [c["text"] for c in first["choices"]]
    assert status == 200 and texts == [c["text"] for c in again["choices"]]  # the seed decides all n
    assert len(set(texts)) > 1  # n samples, not one copied
    steps = first["redrafter"]["steps"]  # n decodes: their steps add up, each sample's prefill one of them
    assert steps >= 3 and first["redrafter"]["tokens_per_step"] == round(first["usage"]["completion_tokens"] / steps, 4)
    status, out = app.post("/v1/completions", body | {"top_p": 0.9})
    assert status == 400 and '"top_p" is not implemented' in out["error"]["message"]
    assert app.post("/v1/completions", body | {"top_p": 1, "top_k": -1})[0] == 200  # the values that change nothing
    app = App(backend, "smol", 8)  # a greedy checkpoint
    assert app.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2, "top_p": 0.9})[0] == 200  # greedy: moot
    for bad, says in (({"top_p": "x"}, "(0, 1]"), ({"top_p": 2}, "(0, 1]"), ({"top_k": 1.5}, "integer"),
                      ({"min_p": -0.1}, "[0, 1]")):  # but a malformed one is a 400, greedy too (was a 200)
        status, out = app.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2} | bad)
        assert status == 400 and says in out["error"]["message"], (bad, out)


def test_a_seeded_answer_is_its_own_alone_in_a_list_or_one_of_n(sampler):
    """As vLLM: answer k of each prompt samples from its own generator seeded seed + k (a review: one generator
    shared by a request's rows gave "ab" alone one text and inside ["ab", "cd"] another), so a prompt's answer is
    the same alone, anywhere in a list and whatever the batch it decodes in; n answers are seeds seed, seed + 1..."""
    app = App(sampler, "tiny", 8)
    before = sampler.scheduler.max_batch

    def texts(prompt, seed, **more) -> list[str]:
        status, out = app.post("/v1/completions", {"prompt": prompt, "temperature": 1.0, "seed": seed,
                                                   "max_tokens": 8} | more)
        assert status == 200, out
        return [c["text"] for c in out["choices"]]

    try:
        prompts = ["Once upon a time", "The sun is", "Red, green and"]
        alone = [texts(p, 5)[0] for p in prompts]
        assert texts(prompts, 5) == alone and texts(prompts[::-1], 5) == alone[::-1]
        sampler.scheduler.max_batch = 2  # the third prompt joins as a row ends: still its own answer
        assert texts(prompts, 5) == alone
        n = texts(prompts[:2], 5, n=3)
        assert n[::3] == alone[:2]  # answer 0: the seed itself
        assert n[1::3] == [texts(p, 6)[0] for p in prompts[:2]] and n[2::3] == [texts(p, 7)[0] for p in prompts[:2]]
        assert texts(prompts[0], 2 ** 63 - 1, n=2)[1] == texts(prompts[0], 0)[0]  # seed + k wraps at 2**63
        assert len(set(alone)) == 3 and len(set(n[:3])) == len(set(n[3:])) == 3  # the premise: answers differ
        chat = app.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "n": 2, "seed": 5,
                                                 "temperature": 1.0, "max_tokens": 8})[1]
        again = app.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "seed": 6,
                                                  "temperature": 1.0, "max_tokens": 8})[1]
        assert chat["choices"][1]["message"] == again["choices"][0]["message"]
    finally:
        sampler.scheduler.max_batch = before


def test_a_seed_list_of_another_length_is_refused_before_decoding(backend):
    """ReferenceBackend.complete takes one seed per prompt (`answer_seeds`); a list of another length is refused
    before the scheduler thread indexes it, in one sentence counted in words ('1 seeds for 2 prompts' was said)."""
    from redrafter_trt.serve_errors import RequestError

    with pytest.raises(RequestError, match=r"^1 seed for 2 prompts: send one seed per prompt"):
        backend.complete([[5, 6, 7]] * 2, 2, 1.0, [3], [])
    assert len(backend.complete([[5, 6, 7]] * 2, 2, 1.0, [3, 4], [])) == 2


def test_echo_with_logprobs_scores_the_prompt_as_transformers(url, backend, smollm2):
    prompt = "The three primary colors are"
    ids = backend.encode(prompt)
    body = {"prompt": prompt, "echo": True, "logprobs": 2, "max_tokens": 4}
    choice = call(url, "/v1/completions", body)[1]["choices"][0]
    answer = hf_greedy(smollm2, ids, 4)
    assert choice["text"] == prompt + backend.tokenizer.decode(answer, skip_special_tokens=True)
    lp = choice["logprobs"]
    want = hf_answer_logprobs(smollm2, ids[:1], ids[1:] + answer)  # every position after the first, teacher-forced
    tokens = ids + answer
    assert len(lp["tokens"]) == len(tokens) and "".join(lp["tokens"]) == choice["text"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == pytest.approx([float(want[t - 1, tokens[t]]) for t in range(1, len(tokens))],
                                                     abs=1e-3)
    assert list(lp["top_logprobs"][1].values())[:2] == pytest.approx(want[0].topk(2).values.tolist(), abs=1e-3)
    assert [choice["text"][o:].startswith(t) for o, t in zip(lp["text_offset"], lp["tokens"])] == [True] * len(tokens)
    events = stream(url, "/v1/completions", body | {"stream_options": {"include_usage": True}})
    parts = [c for e in events for c in e["choices"]]
    assert "".join(c["text"] for c in parts) == choice["text"]
    chunks = [c["logprobs"] for c in parts if c["logprobs"]]
    assert sum((c["tokens"] for c in chunks), []) == lp["tokens"]
    assert sum((c["text_offset"] for c in chunks), []) == lp["text_offset"]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == len(answer)
    assert [e.get("usage", "absent") for e in events[:-1]] == [None] * (len(events) - 1)  # counted once, at the end


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_include_usage_puts_a_null_usage_in_every_chunk_but_the_last(url, path):
    """OpenAI's stream_options.include_usage: 'an additional chunk will be streamed before the data: [DONE] message.
    The usage field on this chunk shows the token usage statistics for the entire request, and the choices field
    will always be an empty array. All other chunks will also include a usage field, but with a null value.' Only
    the chunk finishing the answers had one; the role, echo and text chunks had none. n > 1 too; without the option
    no chunk has a usage key."""
    chat = path.endswith("chat/completions")
    body = ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]} if chat else
            {"prompt": ["Count to five:", "Hi"]}) | {"n": 2, "max_tokens": 6, "echo": True}
    events = stream(url, path, body | {"stream_options": {"include_usage": True}})
    whole = call(url, path, body)[1]
    assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]
    assert len(events) > 4 and [e.get("usage", "absent") for e in events[:-1]] == [None] * (len(events) - 1)
    assert not any("usage" in e for e in stream(url, path, body))


def test_continuous_usage_stats_put_each_answers_usage_so_far_in_every_chunk(url, backend):
    """As trtllm-serve and vLLM (their benchmark clients send it): with include_usage, every chunk carries its
    answer's prompt tokens and tokens generated so far; without include_usage the option changes nothing."""
    prompts = ["The capital of France is", "Name a color:"]
    body = {"prompt": prompts, "n": 2, "max_tokens": 8, "stream": True}
    whole = call(url, "/v1/completions", body | {"stream": False})[1]
    events = stream(url, "/v1/completions", body | {"stream_options": {"include_usage": True,
                                                                       "continuous_usage_stats": True}})
    assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]
    assert all(e["usage"] for e in events)
    finals = []
    for i, choice in enumerate(whole["choices"]):
        mine = [e for e in events[:-1] if [c["index"] for c in e["choices"]] == [i]]
        assert "".join(e["choices"][0]["text"] for e in mine) == choice["text"]
        assert mine[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]  # its finish, in a chunk of its own
        made = [e["usage"]["completion_tokens"] for e in mine]
        assert made == sorted(made) and 1 <= made[0] < made[-1]
        finals.append(made[-1])
        assert {e["usage"]["prompt_tokens"] for e in mine} == {len(backend.encode(prompts[i // 2]))}
        assert all(e["usage"]["total_tokens"] == e["usage"]["prompt_tokens"] + e["usage"]["completion_tokens"]
                   for e in mine)
    assert sum(finals) == whole["usage"]["completion_tokens"]  # each answer's own count at its finish
    plain = stream(url, "/v1/completions", body | {"stream_options": {"continuous_usage_stats": True}})
    assert not any("usage" in e for e in plain)  # as without it: no usage


def test_ignore_eos_runs_every_answer_to_max_tokens_as_transformers_without_eos(url32, backend, smollm2):
    """As trtllm-serve's ignore_eos: EOS is generated and decoding goes on (transformers with no EOS is the truth);
    the requests that ignore EOS batch together, beside the ones that stop at it."""
    from test_runtime_support import hf_model

    ids = backend.encode_chat([{"role": "user", "content": "Say hi."}])
    short = hf_greedy(smollm2, ids, 32)
    assert len(short) < 32  # the premise: it ends at EOS
    with torch.no_grad():
        x = torch.tensor([ids])
        whole = hf_model(smollm2).generate(x, attention_mask=torch.ones_like(x), max_new_tokens=32, do_sample=False,
                                           eos_token_id=[])[0, len(ids):].tolist()
    body = {"prompt": [ids, ids], "max_tokens": 32, "ignore_eos": True, "logprobs": 0}
    out = call(url32, "/v1/completions", body)[1]
    assert [c["finish_reason"] for c in out["choices"]] == ["length", "length"]
    assert out["usage"]["completion_tokens"] == 64
    want = backend.tokenizer.decode(whole, skip_special_tokens=True)
    assert [c["text"] for c in out["choices"]] == [want, want]
    lp = out["choices"][0]["logprobs"]  # as trtllm-serve: every token listed, the EOS inside the answer too
    assert len(lp["tokens"]) == 32 and lp["tokens"][len(short) - 1] == backend.tokenizer.decode(short[-1])
    parts = [c for e in stream(url32, "/v1/completions", body) for c in e["choices"]]
    assert ["".join(c["text"] for c in parts if c["index"] == i) for i in (0, 1)] == [want, want]
    plain = call(url32, "/v1/completions", {"prompt": ids, "max_tokens": 32, "ignore_eos": False})[1]
    assert plain["choices"][0]["finish_reason"] == "stop" and plain["usage"]["completion_tokens"] == len(short)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_trtllm_benchmark_serving_requests_are_answered_as_it_reads_them(url32, backend, path):
    """The bodies TensorRT-LLM's benchmark_serving.py (after vLLM's) sends with --ignore-eos: it reads each chunk's
    first choice's text (chat: delta content) and the output length from the usage chunk without choices."""
    chat = path.endswith("chat/completions")
    body = {"model": "smol", "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True},
            "ignore_eos": True}
    if chat:
        body |= {"messages": [{"role": "user", "content": [{"type": "text", "text": "Say hi."}]}],
                 "max_completion_tokens": 32}
    else:
        prompt = backend.tokenizer.apply_chat_template([{"role": "user", "content": "Say hi."}], tokenize=False,
                                                       add_generation_prompt=True)
        body |= {"prompt": prompt, "repetition_penalty": 1.0, "max_tokens": 32, "logprobs": None}
    events = stream(url32, path, body)
    usage = [e["usage"] for e in events if not e["choices"] and e.get("usage")]
    assert usage and usage[-1]["completion_tokens"] == 32  # every request the length the benchmark asked for
    text = "".join((c["delta"].get("content") or "") if chat else c["text"] for e in events for c in e["choices"][:1])
    whole = call(url32, path, body | {"stream": False, "stream_options": None})[1]["choices"][0]
    assert text == (whole["message"]["content"] if chat else whole["text"])
    early = call(url32, path, body | {"stream": False, "stream_options": None, "ignore_eos": False})[1]
    assert early["usage"]["completion_tokens"] < 32  # the premise: without ignore_eos this answer ends at EOS


def test_max_tokens_zero_with_echo_scores_the_prompt_alone(url, backend):
    body = {"prompt": ["The sky is blue.", "Paris is in France."], "echo": True, "logprobs": 0, "max_tokens": 0}
    out = call(url, "/v1/completions", body)[1]
    assert [c["text"] for c in out["choices"]] == body["prompt"]
    assert out["usage"]["completion_tokens"] == 0 and out["redrafter"] == {"steps": 0, "tokens_per_step": None}
    for prompt, c in zip(body["prompt"], out["choices"]):
        assert len(c["logprobs"]["token_logprobs"]) == len(backend.encode(prompt)) and c["finish_reason"] == "length"
        assert all(v < 0 for v in c["logprobs"]["token_logprobs"][1:])
    plain = call(url, "/v1/completions", body | {"logprobs": None})[1]
    assert [c["text"] for c in plain["choices"]] == body["prompt"] and plain["choices"][0]["logprobs"] is None


def test_chat_echo_brings_back_a_last_assistant_message_before_a_new_turn(url, backend, smollm2):
    """As vLLM and trtllm-serve: echo brings back a last message of the answering role, and the answer is a new
    assistant turn after it (the template's generation prompt, vLLM's default add_generation_prompt), not the
    message continued; vLLM continues it under continue_final_message, which is refused here."""
    body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
    plain = call(url, "/v1/chat/completions", body)[1]["choices"][0]["message"]["content"]
    assert call(url, "/v1/chat/completions", body | {"echo": True})[1]["choices"][0]["message"]["content"] == plain
    started = {"messages": body["messages"] + [{"role": "assistant", "content": "Sure:"}], "max_tokens": 4}
    answer = call(url, "/v1/chat/completions", started)[1]["choices"][0]["message"]["content"]
    echoed = call(url, "/v1/chat/completions", started | {"echo": True})[1]["choices"][0]["message"]["content"]
    assert echoed == "Sure:" + answer
    turn = backend.tokenizer.apply_chat_template(started["messages"], add_generation_prompt=True, tokenize=True,
                                                 return_dict=False)
    assert answer == backend.tokenizer.decode(hf_greedy(smollm2, turn, 4), skip_special_tokens=True)
    status, out = call(url, "/v1/chat/completions", started | {"echo": True, "continue_final_message": True,
                                                               "add_generation_prompt": False})
    assert status == 400 and out["error"]["message"].startswith('"continue_final_message" is not implemented')


@pytest.mark.parametrize("prompt", ["<|im_start|>user\nhi<|im_end|>", "café 😀 日本語 🤖x"])
def test_echo_is_the_prompt_as_sent_with_offsets_into_it(url, prompt):
    choice = call(url, "/v1/completions", {"prompt": prompt, "echo": True, "logprobs": 0, "max_tokens": 0})[1][
        "choices"][0]
    assert choice["text"] == prompt
    lp = choice["logprobs"]
    assert lp["text_offset"] == sorted(lp["text_offset"])
    for token, offset in zip(lp["tokens"], lp["text_offset"]):
        if token.startswith("bytes:"):  # part of a character: it starts where that character does
            assert bytes(int(b, 16) for b in token[len("bytes:"):].split("\\x")[1:]) in prompt[offset: offset + 2].encode()
        else:
            assert prompt[offset:].startswith(token), (token, offset)


def test_echo_offsets_of_each_prompts_answer_count_from_its_own_prompt(url):
    """Several prompts of different lengths, echoed with logprobs and new tokens: every answer's text_offset points
    into its own text (prompt i // n's echo, then its answer), whole and streamed. A review found offsets counted from
    the first prompt's echo (`echoes[0]`) passing every test, as only one prompt was checked."""
    body = {"prompt": ["Hi", "The cat sat on the", "A"], "n": 2, "echo": True, "logprobs": 0, "max_tokens": 3}
    choices = call(url, "/v1/completions", body)[1]["choices"]
    assert len(choices) == 6
    for c in choices:
        lp, text = c["logprobs"], c["text"]
        assert text.startswith(body["prompt"][c["index"] // 2]) and len(lp["tokens"]) > 1
        placed = [text[o:].startswith(t) for o, t in zip(lp["text_offset"], lp["tokens"])]
        assert placed == [True] * len(placed), (text, lp["tokens"], lp["text_offset"])
    parts = [c for e in stream(url, "/v1/completions", body) for c in e["choices"]]
    for c in choices:
        mine = [p["logprobs"] for p in parts if p["index"] == c["index"] and p["logprobs"]]
        assert sum((m["text_offset"] for m in mine), []) == c["logprobs"]["text_offset"]


@pytest.mark.parametrize("body, needle", [
    ({"prompt": [-1], "echo": True, "max_tokens": 2}, "vocabulary"),
    ({"prompt": [60000], "echo": True, "max_tokens": 0}, "vocabulary"),
    ({"prompt": ["", "a"], "echo": True, "max_tokens": 0}, "empty"),
    ({"prompt": [1] * 8193, "echo": True, "max_tokens": 0}, "maximum context length is 8192 tokens"),
    ({"prompt": "hi", "stop_token_ids": [13]}, '"stop_token_ids"'),
    ({"prompt": "hi", "skip_special_tokens": False}, '"skip_special_tokens"'),
    ({"prompt": "hi", "prompt_logprobs": 1}, '"echo": true with "logprobs"'),
    ({"prompt": "hi", "add_special_tokens": False}, '"add_special_tokens"'),
    ({"prompt": "hi", "stream": True, "stream_options": {"continuous_usage_stats": 2}}, "continuous_usage_stats"),
])
def test_echo_checks_prompts_first_and_more_fields_are_refused(url, body, needle):
    status, out = call(url, "/v1/completions", body)
    assert status == 400 and needle in out["error"]["message"], out


def test_streamed_echo_of_a_prompt_too_long_is_a_plain_400(url):
    status, out = call(url, "/v1/completions", {"prompt": [1] * 8190, "max_tokens": 5, "echo": True, "stream": True})
    assert status == 400 and "context length" in out["error"]["message"]  # refused before any chunk went out
    status, out = call(url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                     "add_generation_prompt": False})
    assert status == 400 and '"add_generation_prompt"' in out["error"]["message"]
    ok = {"prompt": "hi", "max_tokens": 2, "stream": True, "add_special_tokens": True,
          "stream_options": {"include_usage": True, "continuous_usage_stats": False, "include_obfuscation": True}}
    assert stream(url, "/v1/completions", ok)[-1]["usage"]["completion_tokens"] == 2
