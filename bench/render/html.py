"""What every HTML page of jacbench shares: an autoescaping Jinja2 environment, inline
figures, and the base template (styles and sortable tables, no network fetches).

Every string that comes from a result file (names, reasons, environment) goes through
Jinja2's autoescape; nothing here marks such text safe. No torch.
"""

from __future__ import annotations

import base64
import io

import jinja2

_ENV: jinja2.Environment | None = None


def templates() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = jinja2.Environment(
            loader=jinja2.PackageLoader("bench.render", "templates"),
            autoescape=True,  # every template, whatever its name
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _ENV


def render(template: str, **context) -> str:
    return templates().get_template(template).render(**context)


def figure_uri(fig) -> str:
    """A matplotlib figure as an inline PNG data URI, at its own size and dpi.

    Printed on an Agg canvas of its own: the figure is laid out and drawn once, where ``savefig``
    draws a figure twice when it has a layout engine or is cropped (``bbox_inches="tight"``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
