"""Small inline SVG charts, drawn on the server: no script, no library, nothing fetched.

Only numbers and escaped text go into the markup. Colours come from the stylesheet through class
names, because the portal's Content-Security-Policy refuses inline ``style`` attributes.
"""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from app.services.stats import HourBucket

WIDTH = 240
HEIGHT = 56
GAP = 2


def _svg(label: str, body: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{escape(label)}" preserveAspectRatio="none">'
        f"<title>{escape(label)}</title>{body}</svg>"
    )


def _hour_label(bucket: HourBucket) -> str:
    return bucket.starts_at.strftime("%H:00 UTC")


def attempts_chart(buckets: Sequence[HourBucket], label: str) -> Markup:
    """One bar per hour, as tall as that hour's attempts; the succeeded part below, the failed
    part above it. An hour without attempts is a flat tick."""
    most = max((bucket.attempts for bucket in buckets), default=0) or 1
    slot = WIDTH / max(len(buckets), 1)
    bar = max(slot - GAP, 1)
    parts = []
    for index, bucket in enumerate(buckets):
        x = index * slot
        tip = escape(f"{_hour_label(bucket)}: {bucket.succeeded} ok, {bucket.failed} failed")
        if not bucket.attempts:
            parts.append(
                f'<rect class="chart-empty" x="{x:.1f}" y="{HEIGHT - 1}" width="{bar:.1f}" '
                f'height="1"><title>{tip}</title></rect>'
            )
            continue
        ok_height = HEIGHT * bucket.succeeded / most
        failed_height = HEIGHT * bucket.failed / most
        parts.append(f"<g><title>{tip}</title>")
        if ok_height:
            parts.append(
                f'<rect class="chart-ok" x="{x:.1f}" y="{HEIGHT - ok_height:.1f}" '
                f'width="{bar:.1f}" height="{ok_height:.1f}"/>'
            )
        if failed_height:
            parts.append(
                f'<rect class="chart-failed" x="{x:.1f}" '
                f'y="{HEIGHT - ok_height - failed_height:.1f}" width="{bar:.1f}" '
                f'height="{failed_height:.1f}"/>'
            )
        parts.append("</g>")
    return _svg(label, "".join(parts))


def latency_chart(buckets: Sequence[HourBucket], label: str) -> Markup:
    """The median attempt duration per hour as a line with a dot per hour that had attempts;
    the line breaks over hours without any."""
    values = [bucket.p50_ms for bucket in buckets]
    most = max((value for value in values if value is not None), default=0) or 1
    slot = WIDTH / max(len(buckets), 1)
    top = 4  # room for a dot at the highest value
    segments: list[list[tuple[float, float]]] = [[]]
    dots = []
    for index, (bucket, value) in enumerate(zip(buckets, values, strict=True)):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        x = index * slot + slot / 2
        y = HEIGHT - 2 - (HEIGHT - 2 - top) * value / most
        segments[-1].append((x, y))
        tip = escape(f"{_hour_label(bucket)}: median {value:.0f} ms")
        dots.append(
            f'<circle class="chart-dot" cx="{x:.1f}" cy="{y:.1f}" r="2"><title>{tip}</title>'
            "</circle>"
        )
    lines = [
        '<polyline class="chart-line" fill="none" points="'
        + " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
        + '"/>'
        for segment in segments
        if len(segment) > 1
    ]
    baseline = f'<line class="chart-axis" x1="0" y1="{HEIGHT - 1}" x2="{WIDTH}" y2="{HEIGHT - 1}"/>'
    return _svg(label, baseline + "".join(lines) + "".join(dots))
