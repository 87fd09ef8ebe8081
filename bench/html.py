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


def environment() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = jinja2.Environment(
            loader=jinja2.PackageLoader("bench", "templates"),
            autoescape=True,  # every template, whatever its name
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _ENV


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)


def figure_uri(fig, dpi: int = 110, tight: bool = True) -> str:
    """A matplotlib figure as an inline PNG data URI; the figure is closed.

    ``tight`` crops the PNG to what is drawn, at the cost of drawing the figure twice; a
    figure laid out by its own layout engine (``layout="constrained"``) can do without.
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
