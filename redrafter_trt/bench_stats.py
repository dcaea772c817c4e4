"""The verdict's noise margin: an interval on the printed speed-up itself. A speed-up is the ratio estimator
R = sum(y) / sum(x) over prompts, x_i the measured method's seconds on prompt i and y_i the baseline's seconds on it
scaled by the two methods' total new tokens (y_i = s_b,i * K / K_b), so R is exactly the measured method's tokens per
second over the baseline's, whether or not each prompt's answers are as long (between plain and drafted decoding
they are; transformers' or another dtype's may stop elsewhere). Each prompt runs every method back to back, so y_i
and x_i pair timings taken under the same machine load; the spread of y_i - R * x_i over prompts is this run's
spread, real per-prompt differences (acceptance varies) as well as timing noise.

The interval is the ratio estimator's linearised standard error with Student's t at n - 1 degrees of freedom, taken
on log R (R * exp(+-t * se / R): a speed-up's interval stays above 0 however noisy): deterministic (no resampling).
One prompt gives no interval, and neither do prompts whose speed-ups are all one (a spread of 0, which timings never
have: a zero-width interval would claim a certainty nothing measured). `best` is the fastest of k configurations, so
its interval takes a Bonferroni level (t at 1 - 0.025 / k): 95% that all k intervals hold at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONFIDENCE = 0.95  # over every configuration eligible for `best` at once
# The relative standard error below which prompts' speed-ups count as all one (no spread): float rounding of identical
# per-prompt ratios leaves about 1e-16; any clock's spread over real prompts is orders of magnitude above this.
NO_SPREAD = 1e-9


@dataclass(frozen=True)
class RatioInterval:
    """A speed-up (the ratio estimator R) and its interval (None and None: no interval, from one prompt or from
    prompts with no spread), taken at a `level` per interval so that `configurations` of them hold together with
    CONFIDENCE."""
    ratio: float
    low: float | None
    high: float | None
    prompts: int
    configurations: int = 1

    @property
    def level(self) -> float:
        """The per-interval confidence: Bonferroni's 1 - 0.05 / k."""
        return 1 - (1 - CONFIDENCE) / self.configurations

    def interval_text(self, noun: str = "prompt") -> str:
        """`95% interval 0.98-1.17x over 3 prompts`, or `interval 0.98-1.17x over 3 prompts, 95% over the 6
        configurations` where several compete for `best`; `no interval from 1 prompt`, or `no interval: no spread over
        3 prompts` (`noun`: what a prompt is called, the quickstart's `question`)."""
        from .plural import counted

        if self.low is None:
            if self.prompts < 2:
                return f"no interval from {counted(self.prompts, noun)}"
            return f"no interval: no spread over {counted(self.prompts, noun)}"
        low, high = _bound(self.low), _bound(self.high)
        dash = " to " if "e" in low + high else "-"  # 3.6e-05 to 3.9e+04x: a hyphen beside an exponent's minus misreads
        text = f"interval {low}{dash}{high}x over {counted(self.prompts, noun)}"
        if self.configurations == 1:
            return f"{CONFIDENCE:.0%} {text}"
        return f"{text}, {CONFIDENCE:.0%} over the {self.configurations} configurations"

    def to_json(self) -> dict:
        return {"ratio": json_number(self.ratio), "low": self.low, "high": self.high, "prompts": self.prompts,
                "confidence": CONFIDENCE, "configurations": self.configurations, "level": self.level}


def json_number(x: float) -> float | None:
    """x, or None (JSON's null) for a NaN speed-up (nothing to divide by): json.dumps writes a bare NaN, which is not
    JSON, and a strict reader refuses the whole file."""
    return x if math.isfinite(x) else None


def _bound(x: float) -> str:
    """An interval's bound as the speed-ups print (1.17), in two significant figures where that shows nothing (two
    prompts' t at 1 degree of freedom: 4.9e-12, not 0.00; 2.5e+10, not an 11-digit number; 0.0022)."""
    return f"{x:.2f}" if 0.01 <= x < 1000 else f"{x:.2g}"


def require_scipy() -> None:
    """Refuse before the timing, not after it (an hour with --compile): the intervals take scipy's t quantiles, and
    an environment installed before scipy became a dependency has none."""
    try:
        import scipy.stats  # noqa: F401
    except ImportError:
        from .errors import DependencyError
        raise DependencyError("bench's speed-up intervals need scipy: run `pip install scipy` (redrafter-trt "
                              "depends on it; reinstalling redrafter-trt installs it too)") from None


def ratio_interval(seconds: list[float], tokens: list[int], baseline_seconds: list[float],
                   baseline_tokens: list[int], configurations: int = 1) -> RatioInterval:
    """The measured method's speed-up over the baseline from each prompt's wall seconds and new tokens ([prompts]
    each): R = sum(y) / sum(x) (see the module's docstring) and its t interval at the Bonferroni level for
    `configurations` intervals; no interval from one prompt or from prompts with no spread (NO_SPREAD), and a NaN
    speed-up where a method's seconds or tokens add up to 0 (nothing to divide by)."""
    n = len(seconds)
    if not (sum(seconds) and sum(tokens) and sum(baseline_seconds) and sum(baseline_tokens)):
        return RatioInterval(math.nan, None, None, n, configurations)
    x, scale = seconds, sum(tokens) / sum(baseline_tokens)
    y = [s * scale for s in baseline_seconds]
    ratio = sum(y) / sum(x)
    if n < 2:
        return RatioInterval(ratio, None, None, n, configurations)
    from scipy.stats import t

    se = math.sqrt(sum((b - ratio * a) ** 2 for a, b in zip(x, y, strict=True)) / (n - 1) / n) / (sum(x) / n)
    if se <= NO_SPREAD * ratio:
        return RatioInterval(ratio, None, None, n, configurations)
    spread = math.exp(float(t.ppf(1 - (1 - CONFIDENCE) / configurations / 2, n - 1)) * se / ratio)  # on log R
    return RatioInterval(ratio, ratio / spread, ratio * spread, n, configurations)
