"""`TrainConfig`: everything one drafter training run needs, checked once by `validate()`."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..drafter import MAX_DRAFT_LAYERS
from ..errors import (COUNT, DEVICE, FLAG, INTEGER, NUMBER, PATH, POSITIVE_INT, SEED, ConfigError, check_input_file,
                      check_types, cuda_index_past, optional)

DTYPES = ("auto", "float32", "bfloat16")
DEFAULT_SEQ_LEN = 1024
FLOAT32_MAX = 3.4028234663852886e38  # torch.finfo(torch.float32).max, without importing torch
FLOAT32_TINY = 1.1754943508222875e-38  # torch.finfo(torch.float32).tiny: the smallest normal float32
LR_MAX = FLOAT32_MAX * (1 - 0.9)  # AdamW's default beta1: its first step, lr / (1 - beta1), stays a float32

DATA_FIX = "pass jsonl, ShareGPT json or .txt prompt files to --data"  # what a --data path that is not a file asks

# field -> what it must be (errors' rules), checked first: a script's batch_size=8.0 was torch's RuntimeError after the
# hidden states were cached, predict_n="3" a TypeError, chat_template_kwargs='{"a": 1}' a template "never reading
# variable '{'"; the ranges are validate's own checks, in the CLI's words
FIELD_TYPES = {
    **dict.fromkeys(("num_draft_layers", "predict_n", "epochs", "batch_size", "distill_max_new_tokens",
                     "distill_batch_size", "checkpoint_every"), INTEGER),
    **dict.fromkeys(("exit_dim", "max_steps", "max_seq_len"), optional(INTEGER)),
    "max_examples": optional(POSITIVE_INT),
    "eval_examples": optional(COUNT),
    **dict.fromkeys(("lr", "soft_target", "later_sharpness", "step_decay"), NUMBER),
    **dict.fromkeys(("rnn", "resume", "distill", "train_head", "full_vocab", "force"), FLAG),
    "seed": SEED,
    "device": DEVICE,  # the CLI's --device
    "chat_template_kwargs": ("a dict of the chat template's variables (str keys)",
                             lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v)),
    "extra": ("a dict", lambda v: isinstance(v, dict)),
}
PATH_TYPES = {"base": PATH, "output": PATH, "cache_dir": optional(PATH),  # None or "": the default
              "data": (f"{PATH[0]} or a list of them", lambda v: isinstance(v, list) and all(map(PATH[1], v)))}


@dataclass
class TrainConfig:
    base: Path                       # Hugging Face folder of the (chat) base model
    data: list[Path]                 # jsonl / ShareGPT json files
    output: Path                     # drafter folder to write (Apple layout)
    num_draft_layers: int = 1        # ResBlocks before the final projection
    rnn: bool = True
    exit_dim: int | None = None      # None = the base hidden size (input_proj 2H -> H, head from the base lm_head)
    predict_n: int = 5               # draft steps trained (recorded in the drafter config)
    epochs: int = 1
    max_steps: int | None = None     # overrides epochs
    lr: float = 1e-3
    batch_size: int = 256            # anchor positions per step (each gives predict_n rows)
    max_seq_len: int | None = None   # None: DEFAULT_SEQ_LEN, or the base's positions when fewer (set by validate)
    seed: int = 0
    device: str = "cpu"
    resume: bool = False
    distill: bool = False
    distill_max_new_tokens: int = 256
    distill_batch_size: int = 64     # SmolLM2, one CPU thread, bfloat16: 1.13x the tokens/s of 32; 128 no better
    base_dtype: str = "auto"         # the base's dtype while it writes answers and hidden states; see torch_dtype
    train_dtype: str = "auto"        # the dtype of the drafter head's products in training; see torch_dtype
    soft_target: float = 0.5         # share of each target given to the base's own distribution (rest: its token)
    later_sharpness: float = 4.0     # draft steps after the first learn logits this many times sharper (objective);
                                     # SmolLM2, MT-Bench, W=5 L=5: 1.703 tokens/step at 1, 1.738 at 2, 1.771 at 4, 1.770 at 8
    step_decay: float = 0.8          # draft step i's loss weighs step_decay**i (Medusa's 0.8 per head): every later
                                     # step counts only when the ones before it were accepted; W=5 L=5: 1.771 at 1, 1.791
    max_examples: int | None = None  # use at most this many conversations (after a seeded shuffle)
    eval_examples: int | None = None  # held out for the final accuracy report; None = 5%, at most 200
    train_head: bool = True          # False freezes the final projection (a third less compute per row)
    full_vocab: bool = False         # False: train (and keep non-zero) only the head rows of tokens in the data
    checkpoint_every: int = 200      # steps
    cache_dir: Path | None = None    # distilled answers and hidden states; None = <cache root>/train (set on init)
    chat_template_kwargs: dict = field(default_factory=dict)  # the chat template's variables at every render
    extra: dict = field(default_factory=dict)  # recorded in the producer block, e.g. the quickstart's version
    force: bool = False              # replace an existing output folder (an earlier drafter, or an empty folder)

    def __post_init__(self):
        one = isinstance(self.data, (str, os.PathLike))  # one file: as a str, its characters were the files
        data = [self.data] if one else list(self.data) if isinstance(self.data, Iterable) else self.data
        check_types("TrainConfig", {"base": self.base, "output": self.output, "data": data,
                                    "cache_dir": self.cache_dir}, PATH_TYPES)
        self.base, self.output = Path(self.base), Path(self.output)
        self.data = [Path(p) for p in data]
        if not self.cache_dir:
            from ..smollm2 import cache_root

            self.cache_dir = cache_root() / "train"
        self.cache_dir = Path(self.cache_dir)

    def validate(self) -> None:
        check_types("TrainConfig", vars(self), FIELD_TYPES)
        checks = [
            (self.predict_n >= 1, f"--predict-n must be at least 1 (got {self.predict_n}): it is the number of draft steps trained"),
            (0 <= self.num_draft_layers <= MAX_DRAFT_LAYERS,
             f"--num-draft-layers must be within 0..{MAX_DRAFT_LAYERS} (got {self.num_draft_layers})"),
            (self.exit_dim is None or self.exit_dim >= 1, f"--exit-dim must be positive (got {self.exit_dim})"),
            (self.epochs >= 1, f"--epochs must be at least 1 (got {self.epochs})"),
            (self.max_steps is None or self.max_steps >= 1, f"--max-steps must be at least 1 (got {self.max_steps})"),
            (0 <= self.soft_target <= 1, f"--soft-target must be within [0, 1] (got {self.soft_target})"),
            (1 <= self.later_sharpness < math.inf,
             f"--later-sharpness must be at least 1 and finite (got {self.later_sharpness}): 1 trains calibrated "
             f"logits, more spreads beams over first tokens"),
            (0 < self.step_decay <= 1, f"--step-decay must be within (0, 1] (got {self.step_decay}): 1 weighs every "
                                       f"draft step alike"),
            (0 < self.lr < math.inf, f"--lr must be positive and finite (got {self.lr})"),
            # AdamW's first step is lr / (1 - beta1), computed in float32: --lr 1e38 was its overflow traceback
            # after the distillation
            # --lr 1e-50 is 0 in float32: a run that trained nothing and saved its init as a drafter
            (self.lr >= FLOAT32_TINY, f"--lr must be at least {FLOAT32_TINY:.1e} (got {self.lr}): a smaller one is 0 "
                                      f"or denormal in float32 and trains nothing (the default is 1e-3)"),
            (self.lr < LR_MAX, f"--lr must be below {LR_MAX:.1e} (got {self.lr}): AdamW's first step is 10x --lr "
                               f"(its beta1 0.9), computed in float32 (the default is 1e-3)"),
            (self.batch_size >= 1, f"--batch-size must be at least 1 (got {self.batch_size})"),
            (self.distill_max_new_tokens >= 2,  # without --distill, the held-out answers' cap
             f"--distill-max-new-tokens must be at least 2 (got {self.distill_max_new_tokens}): a draft step learns "
             f"from 2 answer tokens"),
            (self.distill_batch_size >= 1, f"--distill-batch-size must be at least 1 (got {self.distill_batch_size})"),
            (self.max_seq_len is None or self.max_seq_len >= 8, f"--max-seq-len must be at least 8 (got {self.max_seq_len})"),
            (self.base_dtype in DTYPES, f"--base-dtype must be one of {', '.join(DTYPES)} (got {self.base_dtype!r})"),
            (self.train_dtype in DTYPES, f"--train-dtype must be one of {', '.join(DTYPES)} (got {self.train_dtype!r})"),
            (self.checkpoint_every >= 1, f"checkpoint_every must be at least 1 (got {self.checkpoint_every})"),
            (bool(self.data), "no data files: pass at least one --data FILE"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        self._check_device()
        from ..config import BaseModelConfig, max_positions, read_json

        hf = read_json(self.base / "config.json", "base")
        b = BaseModelConfig.from_hf(hf, str(self.base / "config.json"))
        from ..hf_model import check_transformers_config

        check_transformers_config(self.base)  # before the distillation's load: a traceback there
        H = b.hidden_size
        self._check_base_tensors(b)
        self._fit_seq_len(max_positions(hf))
        if self.predict_n > self.max_seq_len - 2:  # once trained on for ever, each step a loop over every draft step,
            # the later ones never valid, and recorded, so convert took a --draft-len the drafter never learnt
            raise ConfigError(f"--predict-n {self.predict_n} is more draft steps than --max-seq-len {self.max_seq_len} "
                              f"holds (step i needs the anchor and i + 2 tokens after it): pass --predict-n "
                              f"{self.max_seq_len - 2} or less (5 is TensorRT-LLM's default draft length)")
        if not self.train_head and self.exit_dim is not None and H < self.exit_dim != 2 * H:  # train.init's cases
            raise ConfigError(f"--freeze-head keeps the final projection at its init, which at --exit-dim "
                              f"{self.exit_dim} is random (the base lm_head only up to the hidden size {H}, or at "
                              f"{2 * H}): pass --exit-dim {H} or less, or {2 * H}, or leave out --freeze-head")
        if not self.train_head and not self.rnn and self.num_draft_layers == 0 and self.exit_dim == 2 * H:
            # no recurrence, ResBlock or input_proj (E = 2H): the optimizer's ValueError traceback once, after the
            # distillation and the hidden states
            raise ConfigError(f"--freeze-head with --no-rnn and --num-draft-layers 0 at --exit-dim {2 * H} leaves the "
                              f"drafter nothing to train (no recurrence, ResBlock or input_proj, and the final "
                              f"projection frozen): leave out --freeze-head, or pass --rnn or --num-draft-layers 1")
        if self.exit_dim is not None:  # before the base loads: --exit-dim 10**8 was an allocation traceback
            self._check_drafter_size(hf, H)
        for p in self.data:
            check_input_file(p, "data file", DATA_FIX)
        if not (self.base / "config.json").is_file():
            raise ConfigError(f"{self.base} has no config.json: point --base at a Hugging Face model folder")
        if self.cache_dir.exists() and not self.cache_dir.is_dir():
            raise ConfigError(f"--cache-dir {self.cache_dir} is a file: pass a folder (made if missing)")
        from ..output import check_output_folder, is_within, writable_folder

        # its hidden-*.safetensors beside the model's weights; by identity too, as for outputs (is_within: `Base` on a
        # case-insensitive disk names `base`)
        self._refuse_cache_among_models()

        # now, not when the first cache file is written: after the base has run over every example (hours on a
        # large base), an unwritable cache was 'No such file or directory: check the path ...'
        if why := writable_folder(self.cache_dir):
            raise ConfigError(f"cannot write in --cache-dir {self.cache_dir} ({why}): choose another --cache-dir")

        # by identity too (is_within); before either exists, by name: the run makes them
        if is_within(self.output, self.cache_dir) and not is_within(self.cache_dir, self.output):
            raise ConfigError(f"--output {self.output} is inside the training cache {self.cache_dir}, whose entries "
                              f"train removes and which may be deleted to free space: choose an --output outside it, "
                              f"or another --cache-dir")
        check_output_folder(self.output, self.force, self.inputs)

    def _refuse_cache_among_models(self) -> None:
        """Refuse a --cache-dir inside the base, the --output (which train writes whole, and --force replaces) or any
        model, drafter, checkpoint or engine folder (one holding config.json: `earlier_output_kind` names which): only
        one equal to --base was, and `--cache-dir base/cache` wrote bases/, hidden-* and teacher-* among the base's
        files, `--cache-dir DRAFTER` into an earlier output that a later `--force` then refused for holding them (a
        review). A cache beside the data files is left alone (`--cache-dir cache` beside `d.jsonl`)."""
        from ..output import earlier_output_kind, is_within, named_path

        cache = self.cache_dir
        fix = "choose a --cache-dir outside it"
        if is_within(cache, self.base):
            where = "is the base folder" if is_within(self.base, cache) else f"is inside the base folder {self.base}"
            raise ConfigError(f"--cache-dir {cache} {where}: the cache would sit among the model's files; {fix}")
        if is_within(cache, self.output):
            where = "is" if is_within(self.output, cache) else "is inside"
            raise ConfigError(f"--cache-dir {cache} {where} the --output folder {self.output}, which train writes "
                              f"whole (and --force replaces): {fix}")
        for folder in (named_path(cache), *named_path(cache).parents):
            if (folder / "config.json").is_file():
                kind = earlier_output_kind(folder)
                what = f"an earlier {kind} folder" if kind and kind != "ours" else \
                    "an earlier ReDrafter output" if kind else "a model folder (it holds config.json)"
                where = "is" if is_within(folder, cache) else "is inside"
                raise ConfigError(f"--cache-dir {cache} {where} {folder}, {what}: the cache's files would sit among "
                                  f"its own (and a later --force over it refuses them); {fix}")

    def _check_base_tensors(self, b) -> None:
        """The base's tensors named and shaped as its config.json says (headers only, as convert checks them): weights
        that disagreed were transformers' RuntimeError traceback when the base loaded, and missing layers were
        initialised at random without a word (a drafter trained on a broken base)."""
        from ..base_plan import check_hf_tensors
        from ..io import TensorSource

        src = TensorSource.from_hf_folder(self.base)
        try:
            check_hf_tensors(src, b, self.base)
        finally:
            src.close()

    def _check_drafter_size(self, hf: dict, H: int) -> None:
        from ..drafter import DrafterConfig, check_size
        from ..io import TensorSource

        src = TensorSource.from_hf_folder(self.base)
        try:
            check_size(DrafterConfig(hidden_size=H, exit_dim=self.exit_dim, num_draft_layers=self.num_draft_layers,
                                     rnn=self.rnn, vocab_size=int(hf["vocab_size"])), src, default_exit_dim=H,
                       frozen_head=not self.train_head)
        finally:
            src.close()

    def _fit_seq_len(self, positions: int) -> None:
        """max_seq_len within the base's positions (max_position_embeddings): the default cut to them; a longer one
        asked for is refused, as `run` refuses a prompt past them (the base's hidden states there, which the drafter
        would learn from, are ones it never produces in use)."""
        if self.max_seq_len is None:
            self.max_seq_len = min(DEFAULT_SEQ_LEN, positions)
        elif self.max_seq_len > positions:
            raise ConfigError(f"--max-seq-len {self.max_seq_len} is more than the base's {positions} positions "
                              f"(max_position_embeddings): pass --max-seq-len {positions} or less")

    def _check_device(self) -> None:
        """A CUDA device that is there: refused now, not after an hour of distillation on the CPU."""
        if not self.device.startswith("cuda"):
            return
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {self.device} but no CUDA device is visible (or torch was built without "
                              f"CUDA): use --device cpu")
        index = int(self.device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigError(cuda_index_past(self.device, torch.cuda.device_count()))

    @property
    def inputs(self) -> list[Path]:
        """What training reads (and the cache it writes): an output folder that is or holds one is refused."""
        return [self.base, *self.data, self.cache_dir]

    def torch_dtype(self, name: str, device):
        """The torch dtype of option `name` ("auto", "float32" or "bfloat16") on `device`. auto: bfloat16 on a
        GPU, and on a CPU with native bfloat16 products (AVX512-BF16 / AMX), else float32.
        - base_dtype, the frozen base writing answers and hidden states: 1.35-1.6x faster distillation on such
          a CPU; SmolLM2-135M in bfloat16 picks the float32 greedy token 97.9% of the time, teacher-forced on its
          own MT-Bench answers: far inside what a drafter gets right.
        - train_dtype, the products of the drafter's output projection (most of a training step): weights,
          optimizer, logits, loss and gradients stay float32, as in mixed-precision training."""
        import torch

        if name != "auto":
            return getattr(torch, name)
        return torch.bfloat16 if device.type != "cpu" or cpu_has_native_bf16() else torch.float32

    @property
    def state_path(self) -> Path:
        """The resumable training state, next to the output folder (the output is replaced atomically): the folder
        a link given as --output names, so the link and that folder have one state; else --output as given (torchrun's
        ranks on several nodes read it at that path, each on its own)."""
        return self._beside_output(".train-state.pt")

    @property
    def lock_path(self) -> Path:
        """What a run holds while it writes the output and its state (`state.writing_output`), next to them."""
        return self._beside_output(".train.lock")

    def _beside_output(self, suffix: str) -> Path:
        from ..output import named_path

        folder = named_path(self.output) if self.output.is_symlink() else self.output
        return folder.with_name(folder.name + suffix)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX). oneDNN also runs bfloat16 on plain AVX-512
    (`_is_mkldnn_bf16_supported`, the check used until session 39), emulated: on an Ice Lake Xeon (AVX-512 without
    BF16) SmolLM2's distillation took 2.0x float32's time in bfloat16 (docs/measurements.md)."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check is not None and check() for check in checks)
