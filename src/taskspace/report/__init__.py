"""The report of a run: figures (PNG + SVG) and one self-contained ``report.html``.

    from taskspace.report import build_report
    build_report("runs/blimp")       # runs/blimp/figures/, runs/blimp/report.html
"""
from __future__ import annotations

from .figures import save_workers
from .html import build_report, render_html

__all__ = ["build_report", "render_html", "save_workers"]
