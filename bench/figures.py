"""The arithmetic of the benchmark's figures: percentiles, rounding, rates."""

from __future__ import annotations


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    """Seconds as milliseconds, to a tenth."""
    return round(seconds * 1000, 1)


def rate(count: int, seconds: float) -> float:
    """Per second, to a tenth; 0.0 when no time passed."""
    return round(count / seconds, 1) if seconds > 0 else 0.0


def speed(count: int, seconds: float, latencies: list[float]) -> dict[str, float]:
    """The rate and the p50/p99 latency every scenario reports."""
    return {
        "per_second": rate(count, seconds),
        "p50_ms": ms(percentile(latencies, 0.5)),
        "p99_ms": ms(percentile(latencies, 0.99)),
    }
