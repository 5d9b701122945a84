"""Three small chart kinds as SVG: lines (latency percentile curves), grouped bars
(throughput and CPU per arm) and points (failover outages). Written here rather than with
matplotlib so the harness stays standard-library Python, runnable by any Debian python3
without pip or a venv; the charts are simple enough that this is a page of code."""

import math
from html import escape

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
# One colour per arm in every chart.
ARM_COLORS = {"direct": "#7f7f7f", "alive-proxy": "#d62728", "haproxy": "#1f77b4",
              "haproxy-smart": "#17becf", "nginx-stream": "#2ca02c"}


def color(name, i):
    return ARM_COLORS.get(name, PALETTE[i % len(PALETTE)])
W, H = 720, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 170, 40, 60


def _frame(title, y_label, x_label):
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
            f'font-family="sans-serif" font-size="12">',
            f'<rect width="{W}" height="{H}" fill="white"/>',
            f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
            f'<text x="16" y="{H / 2}" transform="rotate(-90 16 {H / 2})" '
            f'text-anchor="middle">{escape(y_label)}</text>',
            f'<text x="{LEFT + (W - LEFT - RIGHT) / 2}" y="{H - 12}" '
            f'text-anchor="middle">{escape(x_label)}</text>']


def _nice_max(value):
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _y_axis(parts, y_max, unit_fmt):
    plot_h = H - TOP - BOTTOM
    for i in range(6):
        v = y_max * i / 5
        y = TOP + plot_h - plot_h * i / 5
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#ddd"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{unit_fmt(v)}</text>')


def _legend(parts, names):
    for i, name in enumerate(names):
        y = TOP + 10 + i * 18
        parts.append(f'<rect x="{W - RIGHT + 14}" y="{y - 9}" width="12" height="12" '
                     f'fill="{color(name, i)}"/>')
        parts.append(f'<text x="{W - RIGHT + 32}" y="{y + 1}">{escape(name)}</text>')


def lines(title, y_label, x_label, series, x_ticks, unit_fmt=lambda v: f"{v:g}"):
    """`series`: {name: [(x, y), ...]} with x already on the plot's scale (0..x_max)."""
    x_max = max((x for pts in series.values() for x, _ in pts), default=1.0) or 1.0
    y_max = _nice_max(max((y for pts in series.values() for _, y in pts), default=1.0))
    parts = _frame(title, y_label, x_label)
    _y_axis(parts, y_max, unit_fmt)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    for x, label in x_ticks:
        px = LEFT + plot_w * x / x_max
        parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{TOP}" y2="{TOP + plot_h}" '
                     f'stroke="#eee"/>')
        parts.append(f'<text x="{px:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
                     f'{escape(label)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        coords = " ".join(f"{LEFT + plot_w * x / x_max:.1f},{TOP + plot_h - plot_h * min(y, y_max) / y_max:.1f}"
                          for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color(name, i)}" '
                     f'stroke-width="2" points="{coords}"/>')
    _legend(parts, list(series))
    parts.append("</svg>")
    return "\n".join(parts)


def bars(title, y_label, groups, names, values, unit_fmt=lambda v: f"{v:g}"):
    """`values[(group, name)]` → bar height; one cluster per group, one bar per name."""
    y_max = _nice_max(max(values.values(), default=1.0))
    parts = _frame(title, y_label, "")
    _y_axis(parts, y_max, unit_fmt)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = plot_w / max(1, len(groups))
    bar = slot * 0.8 / max(1, len(names))
    for g, group in enumerate(groups):
        x0 = LEFT + g * slot + slot * 0.1
        parts.append(f'<text x="{LEFT + g * slot + slot / 2:.1f}" y="{TOP + plot_h + 16}" '
                     f'text-anchor="middle">{escape(group)}</text>')
        for n, name in enumerate(names):
            v = values.get((group, name))
            if v is None:
                continue
            h = plot_h * min(v, y_max) / y_max
            parts.append(f'<rect x="{x0 + n * bar:.1f}" y="{TOP + plot_h - h:.1f}" '
                         f'width="{bar * 0.9:.1f}" height="{h:.1f}" '
                         f'fill="{color(name, n)}"/>')
    _legend(parts, names)
    parts.append("</svg>")
    return "\n".join(parts)


def points(title, y_label, groups, samples, unit_fmt=lambda v: f"{v:g}"):
    """`samples[group]` → values, drawn as points with the median as a bar."""
    finite = [v for vs in samples.values() for v in vs if math.isfinite(v)]
    y_max = _nice_max(max(finite, default=1.0))
    parts = _frame(title, y_label, "")
    _y_axis(parts, y_max, unit_fmt)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = plot_w / max(1, len(groups))
    for g, group in enumerate(groups):
        cx = LEFT + g * slot + slot / 2
        parts.append(f'<text x="{cx:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle" '
                     f'font-size="10">{escape(group)}</text>')
        values = sorted(v for v in samples.get(group, []) if math.isfinite(v))
        for i, v in enumerate(values):
            y = TOP + plot_h - plot_h * min(v, y_max) / y_max
            parts.append(f'<circle cx="{cx - 8 + 16 * i / max(1, len(values) - 1):.1f}" '
                         f'cy="{y:.1f}" r="4" fill="{PALETTE[g % len(PALETTE)]}"/>')
        if values:
            med = values[len(values) // 2]
            y = TOP + plot_h - plot_h * min(med, y_max) / y_max
            parts.append(f'<line x1="{cx - 16:.1f}" x2="{cx + 16:.1f}" y1="{y:.1f}" '
                         f'y2="{y:.1f}" stroke="black" stroke-width="2"/>')
    parts.append("</svg>")
    return "\n".join(parts)
