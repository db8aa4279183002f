"""How every figure looks in print: drawn at the paper's size, so that nothing is scaled down below 7 pt.

The paper's text block is 16 cm wide (A4, 2.5 cm margins): a figure at most `TEXT_WIDTH` inches wide is
included at its natural size (`\\GenGraphic`), so the font sizes set here are the printed ones. Fonts are
embedded as TrueType (``pdf.fonttype 42``), in a serif family like the text's Latin Modern: DejaVu Serif,
whose TrueType files matplotlib embeds whole-glyph (Latin Modern ships only as CFF OpenType).
"""

from __future__ import annotations

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


def apply() -> None:
    """Use these settings for every figure drawn after this call (the figure modules call it on import)."""
    matplotlib.rcParams.update(RC)
