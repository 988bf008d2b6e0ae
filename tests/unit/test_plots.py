"""issue 28: figures a person reads. The wrapped table keeps every word of a long served title (the
old per-ad table cut them at 70 characters, exactly where a cluster's title differs); the train
loss curves are a grid, not a 3200x360 strip; train logs its set-up values as params."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

from hllm_creator.tracking.plots import table_figure, wrap_cell  # noqa: E402

LONG = ("J-B Weld 8265S Cold Weld Steel Reinforced Epoxy - Mixed at a 1:1 ratio, sets in 4-6 hours, "
        "cures in 15-24 hours, for metal, plastic, wood and concrete")


def test_wrapped_table_keeps_every_word_and_grows_rows():
    assert wrap_cell(LONG, 40).replace("\n", " ") == LONG
    assert all(len(line) <= 40 for line in wrap_cell(LONG, 40).splitlines())
    short = table_figure(["ad", "title"], [["1", "Glue"]], [6, 60])
    tall = table_figure(["ad", "title"], [["1", LONG], ["2", LONG + " (cluster 2)"]], [6, 60])
    assert tall.get_size_inches()[1] > short.get_size_inches()[1]
    texts = " ".join(c.get_text().get_text() for c in tall.axes[0].tables[0].get_celld().values()).split()
    for word in LONG.split():
        assert word in texts
    buf = io.BytesIO()
    tall.savefig(buf, format="png", dpi=100)
    w, h = Image.open(buf).size
    assert w / h < 6  # a table, not a strip
    plt.close("all")


def test_loss_curves_are_a_grid():
    from hllm_creator.train.trainer import PANELS, loss_figure

    history = [{"step": s, **{k: 1.0 / (s + 1) for k in PANELS}} for s in range(5)]
    fig = loss_figure(history)
    w, h = fig.get_size_inches()
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == len(PANELS) and w / h < 2.5, (w, h)
    plt.close(fig)
