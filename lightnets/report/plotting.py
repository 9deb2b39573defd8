"""matplotlib, imported only when a plot is asked for (the ``plot`` extra: ``pip install "lightnets[plot]"``)."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or a ValueError naming the extra.

    Agg because plots are written to files, often on machines without a display; call it before
    a long measurement to fail early when matplotlib is missing.
    """
    try:
        import matplotlib
    except ImportError:
        raise ValueError('plotting needs matplotlib: pip install "lightnets[plot]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
