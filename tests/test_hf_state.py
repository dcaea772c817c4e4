"""transformers' process-wide state (hf_state.py): imports one thread at a time, model loads one at a time, and a load
never holds other threads' imports (a chat render's) for its whole length."""

from __future__ import annotations

import threading

from redrafter_trt.hf_state import TRANSFORMERS_LOCK, quiet_load


def test_a_model_load_leaves_other_threads_imports_free():
    """A review: quiet_load held TRANSFORMERS_LOCK for the whole from_pretrained, so a chat render in another thread
    (it imports under that lock) waited 2.69 s against its 0.2 ms median while SmolLM2 loaded: minutes for a large
    base."""
    loading, done, took = threading.Event(), threading.Event(), []

    def load():
        with quiet_load():  # a load in progress
            loading.set()
            done.wait(10)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        assert loading.wait(10)
        took.append(TRANSFORMERS_LOCK.acquire(timeout=2))  # another thread's import meanwhile
        if took[0]:
            TRANSFORMERS_LOCK.release()
    finally:
        done.set()
        worker.join()
    assert took == [True]


def test_loads_are_one_at_a_time_and_restore_the_progress_bars():
    from transformers.utils import logging as hf_logging

    inside, order = threading.Event(), []

    def load(name):
        with quiet_load():
            order.append(f"{name} in")
            assert not hf_logging.is_progress_bar_enabled()
            inside.set()
            threading.Event().wait(0.2)
            order.append(f"{name} out")

    first = threading.Thread(target=load, args=("a",))
    first.start()
    inside.wait(10)
    second = threading.Thread(target=load, args=("b",))
    second.start()
    first.join()
    second.join()
    assert order == ["a in", "a out", "b in", "b out"]
    assert hf_logging.is_progress_bar_enabled()
