"""Rendering console pages: one Jinja environment, the navigation a role sees, and the loss/λ plot.

Pages are rendered on the server (no build step, nothing fetched from elsewhere): the little JavaScript
in static/console.js only refreshes the parts marked live and fills the request form's presets.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape

from api.console.session import PREFIX, User
from service.keys import sessions
from service.keys.contract import Role

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# (label, path, roles besides admin): the console shows what the key's role may use in the API.
NAVIGATION: tuple[tuple[str, str, set[Role]], ...] = (
    ("Queue", "/erasures", {Role.MODERATOR}),
    ("Request takedown", "/erasures/new", {Role.MODERATOR}),
    ("Deployments", "/deployments", {Role.MODERATOR}),
    ("Approvals", "/approvals", {Role.MODERATOR}),
    ("Playground", "/playground", {Role.GENERATOR}),
    ("Audit log", "/audit", set()),
    ("Keys", "/keys", set()),
    ("Webhooks", "/webhooks", set()),
)

# Content-Security-Policy: the browser itself refuses anything not from this server.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def navigation(user: User | None) -> list[tuple[str, str]]:
    if user is None:
        return []
    return [(label, PREFIX + path) for label, path, roles in NAVIGATION if user.can(*roles)]


def render(request: Request, template: str, user: User | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    flash = sessions.pop_flash(user.db, user.session) if user is not None else None
    context = {"request": request, "user": user, "nav": navigation(user), "flash": flash, "prefix": PREFIX,
               "csrf_token": user.session.csrf_token if user else context.get("csrf_token", ""), **context}
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    response.headers.update(HEADERS)
    return response


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def curve_svg(points: Sequence[Sequence[float]], series: Sequence[tuple[int, str, str]], title: str,
              width: int = 420, height: int = 160) -> Markup:
    """A line plot as inline SVG: `points` are rows (step, value...), `series` (column, name, css class)."""
    pad_l, pad_r, pad_t, pad_b = 48, 10, 22, 24
    inner_w, inner_h = width - pad_l - pad_r, height - pad_t - pad_b
    parts = [f'<svg class="plot" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{pad_l}" y="14" class="plot-title">{escape(title)}</text>']
    if len(points) < 1:
        parts.append(f'<text x="{pad_l}" y="{pad_t + inner_h / 2}">no steps yet</text></svg>')
        return Markup("".join(parts))
    steps = [p[0] for p in points]
    values = [p[c] for p in points for c, _, _ in series]
    x0, x1 = min(steps), max(steps) if max(steps) > min(steps) else min(steps) + 1
    y0, y1 = min(values), max(values)
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5

    def xy(step: float, value: float) -> str:
        return f"{pad_l + (step - x0) / (x1 - x0) * inner_w:.1f},{pad_t + (y1 - value) / (y1 - y0) * inner_h:.1f}"

    parts.append(f'<rect x="{pad_l}" y="{pad_t}" width="{inner_w}" height="{inner_h}" class="plot-frame"/>')
    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + 8}" class="plot-axis" text-anchor="end">{y1:.3g}</text>')
    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + inner_h}" class="plot-axis" text-anchor="end">{y0:.3g}</text>')
    parts.append(f'<text x="{pad_l}" y="{height - 6}" class="plot-axis">step {x0:g}</text>')
    parts.append(f'<text x="{width - pad_r}" y="{height - 6}" class="plot-axis" text-anchor="end">{x1:g}</text>')
    for i, (column, name, css) in enumerate(series):
        line = " ".join(xy(p[0], p[column]) for p in points)
        parts.append(f'<polyline points="{line}" class="plot-line {css}"/>')
        parts.append(f'<text x="{width - pad_r - 4}" y="{pad_t + 14 + 14 * i}" class="plot-legend {css}" '
                     f'text-anchor="end">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def fmt(value: Any) -> str:
    """A metric for a table: 3 decimals, — for none."""
    if value is None:
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def event_text(event: Any) -> str:
    """A job event's message for a moderator: "running (attempt 1)" without the worker's "on host:pid" (the
    API's events and the logs keep it, for operators)."""
    message, worker = str(event.message), (event.data or {}).get("worker")
    return message.removesuffix(f" on {worker}") if worker else message


templates.env.filters["when"] = when
templates.env.filters["event_text"] = event_text
templates.env.filters["fmt"] = fmt
templates.env.globals["curve_svg"] = curve_svg
