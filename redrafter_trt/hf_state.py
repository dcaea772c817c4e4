"""transformers' process-wide state, touched one thread at a time: its lazy imports and its model loads.

transformers is a lazy module: its first `AutoTokenizer` (by `transformers.AutoTokenizer` or `from transformers
import AutoTokenizer`) imports the submodule defining it, and a thread asking for it meanwhile sees a half-made
module: two threads loading a tokenizer at once (train_drafter in two threads, serve) had one fail with "module
'transformers' has no attribute 'AutoTokenizer'" (5 runs of 5). Importing transformers with this package would end
the race, but costs every command seconds (`import transformers` 3.5 s, `from transformers import AutoTokenizer` 10 s
on 2 cores, where `import redrafter_trt.tokens` takes 0.3 s); so each function taking a name from transformers
does it holding the lock:

    with TRANSFORMERS_LOCK:
        from transformers import AutoTokenizer

A model load (`quiet_load`) holds a lock of its own, LOAD_LOCK, and runs without transformers' progress bars ("Loading
weights: 100%|...|" on stderr, transformers 5: library code prints nothing of its own; the CLI draws its bars from the
callbacks). from_pretrained sets process-wide state as it loads (torch's default dtype among it): two loads at once
printed a load report of a missing lm_head.weight for SmolLM2, whose head is its tied embedding (1 run of 3). Not
TRANSFORMERS_LOCK: holding that for a whole load stalled every other thread's chat render (which imports under it) for
the load's length (2.7 s for SmolLM2, minutes for an 8B base; a review). A load takes TRANSFORMERS_LOCK only for its
imports, inside LOAD_LOCK, and no import takes LOAD_LOCK: one order, no deadlock.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

TRANSFORMERS_LOCK = threading.RLock()  # imports: held for an import's length
LOAD_LOCK = threading.RLock()  # model loads: held for a whole load (a load inside a load: the same thread)


@contextmanager
def quiet_load():
    """Inside: one model load at a time, without transformers' progress bars, which are after as they were before."""
    with LOAD_LOCK:
        with TRANSFORMERS_LOCK:
            from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            if bars:
                hf_logging.enable_progress_bar()
