"""How every figure looks in print: drawn at the paper's size, so that nothing is scaled down below 7 pt.

The paper's text block is 16 cm wide (A4, 2.5 cm margins): a figure at most `TEXT_WIDTH` inches wide is
included at its natural size (`\\GenGraphic`), so the font sizes set here are the printed ones. Fonts are
embedded as TrueType (``pdf.fonttype 42``), in a serif family like the text's Latin Modern: DejaVu Serif,
whose TrueType files matplotlib embeds whole-glyph (Latin Modern ships only as CFF OpenType).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import ParamSpec, TypeVar

import matplotlib

TEXT_WIDTH = 6.3  # inches: 16 cm
MIN_POINTS = 7.0  # the smallest text at print size

RC = {
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "font.family": "serif",
    "font.serif": ["DejaVu Serif"],
    "mathtext.fontset": "dejavuserif",
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "legend.fontsize": 7.5,
    "legend.title_fontsize": 7.5,
    "figure.titlesize": 9,
    "axes.formatter.useoffset": False,
    "savefig.dpi": 200,
}


P = ParamSpec("P")
R = TypeVar("R")


def context() -> AbstractContextManager:
    """These settings inside a `with` block only; matplotlib's global settings are left as they were."""
    return matplotlib.rc_context(RC)


def styled(draw: Callable[P, R]) -> Callable[P, R]:
    """Decorates a function that draws a figure: it draws under `context()`. Fonts and sizes are fixed when
    each text is made; the font files and their embedding when the figure is saved, so saving uses
    `context()` too (`figures.save_figure`)."""

    @functools.wraps(draw)
    def drawn(*args: P.args, **kwargs: P.kwargs) -> R:
        with context():
            return draw(*args, **kwargs)

    return drawn
