"""Rendering, without torch: the HTML report (``report``), its figures (``figures``), the
terminal's summary (``summary``), the comparison's page and text (``compare``), the advisor's
page (``advice``), and the Jinja2 templates they share (``html``, ``templates/``)."""
