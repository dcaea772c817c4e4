"""The verdict's noise margin: one run's per-prompt speed ratios (drafting against the runtime without it, or against
transformers) and an interval over prompts. Each prompt runs every method back to back, so a ratio per prompt pairs
timings taken under the same machine load; the spread of those ratios over prompts is this run's noise.

The interval is Student's t on the logs of the per-prompt ratios (a geometric mean, as ratios multiply): 95%, two-
sided, deterministic (no resampling). One prompt gives no interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONFIDENCE = 0.95
# Student's t at 0.975 for 1..30 degrees of freedom; above, the Cornish-Fisher expansion (within 1e-3 of it there)
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z_975 = 1.959964


def t_975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` >= 1 degrees of freedom."""
    if df <= len(T_975):
        return T_975[df - 1]
    z = Z_975
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


@dataclass(frozen=True)
class RatioInterval:
    """The geometric mean of per-prompt ratios and its 95% interval (None and None: one prompt, no interval)."""
    ratio: float
    low: float | None
    high: float | None
    prompts: int

    def interval_text(self) -> str:
        """`95% interval 0.98-1.17x over 3 prompts`, or `no interval from 1 prompt`."""
        from .plural import counted

        if self.low is None:
            return f"no interval from {counted(self.prompts, 'prompt')}"
        return f"{CONFIDENCE:.0%} interval {self.low:.2f}-{self.high:.2f}x over {counted(self.prompts, 'prompt')}"

    def to_json(self) -> dict:
        return {"geometric_mean": self.ratio, "low": self.low, "high": self.high, "prompts": self.prompts,
                "confidence": CONFIDENCE}


def ratio_interval(rates: list[float], baseline_rates: list[float]) -> RatioInterval:
    """rates[i] / baseline_rates[i] (tokens per second on prompt i, [prompts] each) over the prompts: their geometric
    mean and its t interval."""
    logs = [math.log(a / b) for a, b in zip(rates, baseline_rates, strict=True)]
    n = len(logs)
    mean = sum(logs) / n
    if n < 2:
        return RatioInterval(math.exp(mean), None, None, n)
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    half = t_975(n - 1) * sd / math.sqrt(n)
    return RatioInterval(math.exp(mean), math.exp(mean - half), math.exp(mean + half), n)
