"""Draw the example's taxonomies for the leukemia page with hiercls.plot.plot_taxonomy.

    python docs/assets/leukemia/make_taxonomy_figures.py

Writes pbc_taxonomy.png and paper_taxonomy.png next to this file. The figures show the
trees only (no data): PBC's 8-class folders are marked with their folder name.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

from hiercls import Taxonomy  # noqa: E402
from hiercls.plot import plot_taxonomy  # noqa: E402

TAXONOMIES = REPO / "examples" / "leukemia" / "taxonomies"


def draw(name: str, size: tuple[float, float], title: str) -> None:
    tax = Taxonomy.from_json(TAXONOMIES / f"{name}.json")
    fig, ax = plt.subplots(figsize=size)
    plot_taxonomy(tax, ax=ax, title=title)
    fig.savefig(HERE / f"{name}_taxonomy.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(HERE / f"{name}_taxonomy.png", tax)


if __name__ == "__main__":
    draw("pbc", (17, 6.5), "PBC blood-cell taxonomy (examples/leukemia/taxonomies/pbc.json)")
    draw("paper", (9, 5), "Clinical taxonomy of Hamdi et al. (examples/leukemia/taxonomies/paper.json)")
