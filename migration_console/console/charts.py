"""Server-rendered SVG charts: no JavaScript library, no CDN, works offline."""

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from migration_console.core.formatting import format_duration

BAR_COLOURS = {"completed": "#2e7d32", "failed": "#c62828"}
DEFAULT_COLOUR = "#607d8b"


def duration_chart(
    rows: list[tuple[str, int, str]], *, width: int = 760, bar_height: int = 16, gap: int = 6
) -> SafeString:
    """Horizontal bars, one per (label, duration_ns, status), longest duration = full width."""
    if not rows:
        return mark_safe("")
    label_width, value_width = 260, 80
    plot_width = width - label_width - value_width
    longest = max(duration for _, duration, _ in rows) or 1
    height = len(rows) * (bar_height + gap) + gap
    parts = [
        f'<svg class="duration-chart" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-label="Duration of each applied migration">'
    ]
    for index, (label, duration, status) in enumerate(rows):
        y = gap + index * (bar_height + gap)
        bar = max(1.0, plot_width * duration / longest)
        colour = BAR_COLOURS.get(status, DEFAULT_COLOUR)
        text_y = y + bar_height - 4
        shown = label if len(label) <= 38 else label[:37] + "…"
        parts.append(
            f"<g><title>{escape(label)}: {escape(format_duration(duration))} ({escape(status)})"
            f"</title>"
            f'<text x="{label_width - 8}" y="{text_y}" text-anchor="end" '
            f'font-family="monospace" font-size="12">{escape(shown)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{bar:.1f}" height="{bar_height}" '
            f'fill="{colour}" data-status="{escape(status)}"></rect>'
            f'<text x="{label_width + bar + 6:.1f}" y="{text_y}" font-size="12">'
            f"{escape(format_duration(duration))}</text></g>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every dynamic value is escaped above
