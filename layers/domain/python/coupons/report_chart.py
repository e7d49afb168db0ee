"""The daily report's chart: one self-contained HTML page (inline SVG and CSS, no script)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

# Minor-unit exponents that are not 2 (for display in the chart only; amounts stay integers).
_EXPONENTS = {**dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX",
                               "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
              **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3)}



def money(amount: int, currency: str) -> str:
    exponent = _EXPONENTS.get(currency, 2)
    sign = "-" if amount < 0 else ""
    whole, part = divmod(abs(amount), 10**exponent) if exponent else (abs(amount), 0)
    text = f"{whole:,}" + (f".{part:0{exponent}d}" if exponent else "")
    return f"{sign}{text} {currency}"


def _bars_svg(hourly: list[list[int]]) -> str:
    width, height, left, bottom, top = 760, 260, 44, 28, 12
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max([1] + [max(h) for h in hourly])
    slot = plot_w / 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="Redemptions and rollbacks per hour (UTC)">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" stroke="#888"/>',
             f'<text x="4" y="{top + 10}" font-size="11">{peak}</text>',
             f'<text x="4" y="{top + plot_h}" font-size="11">0</text>']
    for hour, (redeemed, rolled) in enumerate(hourly):
        x = left + hour * slot
        for offset, value, colour, label in ((2, redeemed, "#2b6cb0", "redeemed"),
                                             (slot / 2, rolled, "#c53030", "rolled back")):
            bar = plot_h * value / peak
            parts.append(f'<rect x="{x + offset:.1f}" y="{top + plot_h - bar:.1f}" width="{slot / 2 - 3:.1f}" '
                         f'height="{bar:.1f}" fill="{colour}"><title>{hour:02d}:00 {label}: {value}</title></rect>')
        if hour % 3 == 0:
            parts.append(f'<text x="{x + 2:.1f}" y="{height - 10}" font-size="11">{hour:02d}h</text>')
    parts.append("</svg>")
    return "".join(parts)


def chart_html(body: Mapping[str, Any], hourly: list[list[int]]) -> str:
    """A self-contained page (inline SVG and CSS, no script, nothing fetched) a person reads at a glance."""
    esc = html.escape
    day = esc(str(body["from"])) if body["from"] == body["to"] else f"{esc(body['from'])} to {esc(body['to'])}"
    totals = "".join(f"<li><b>{esc(money(v, c))}</b></li>" for c, v in body["discount_totals"].items()) or \
        "<li>none</li>"
    channel_rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{t['redemptions']}</td><td>{t['rollbacks']}</td>"
        f"<td>{esc(', '.join(money(v, c) for c, v in t['discount_totals'].items()) or '-')}</td></tr>"
        for name, t in body["by_channel"].items())
    coupon_rows = "".join(
        f"<tr><td><code>{esc(str(c['coupon_id']))}</code></td><td>{esc(str(c['campaign_id'] or ''))}</td>"
        f"<td>{c['redemptions']}</td><td>{c['rollbacks']}</td>"
        f"<td>{esc(', '.join(money(v, cur) for cur, v in c['discount_totals'].items()) or '-')}</td></tr>"
        for c in body["by_coupon"][:10])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>Coupon redemptions {day} (UTC)</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1a202c}}
.cards{{display:flex;gap:16px;flex-wrap:wrap}}.card{{border:1px solid #cbd5e0;border-radius:6px;padding:10px 16px}}
.card b{{font-size:22px;display:block}}table{{border-collapse:collapse;margin-top:8px}}
td,th{{border-bottom:1px solid #e2e8f0;padding:4px 10px;text-align:left}}ul{{margin:4px 0;padding:0;list-style:none}}
.key span{{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}}
</style></head><body>
<h1>Coupon redemptions, {day} (UTC)</h1>
<div class="cards">
<div class="card">Redemptions<b>{body['redemptions']}</b></div>
<div class="card">Rollbacks<b>{body['rollbacks']}</b></div>
<div class="card">Failed attempts<b>{body['failed_attempts']}</b></div>
<div class="card">Suspicious<b>{body['suspicious_count']}</b></div>
<div class="card">Discount given (net)<ul>{totals}</ul></div>
</div>
<h2>Per hour</h2>
<div class="key"><span style="background:#2b6cb0"></span>redeemed<span style="background:#c53030"></span>rolled back</div>
{_bars_svg(hourly)}
<h2>By channel</h2>
<table><tr><th>channel</th><th>redemptions</th><th>rollbacks</th><th>discount (net)</th></tr>{channel_rows}</table>
<h2>Top coupons</h2>
<table><tr><th>coupon</th><th>campaign</th><th>redemptions</th><th>rollbacks</th><th>discount (net)</th></tr>
{coupon_rows or '<tr><td colspan="5">no redemptions</td></tr>'}</table>
</body></html>
"""
