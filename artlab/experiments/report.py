"""Where a study's files go and what it writes there: its tables as CSV, a markdown summary, one HTML page.

Every study writes into `reports_folder(reports_dir, runs_dir)`: `reports_dir` when given, else
`reports/` in the runs folder (`sweeps/<name>/` for a sweep, beside its specification).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from artlab import plots
from artlab.io import write_csv, write_text
from artlab.runs import runs_root


def reports_folder(reports_dir: str | Path | None, runs_dir: str | Path | None, default: str = "reports") -> Path:
    """Where a study's report goes: `reports_dir`, else the folder `default` in the runs folder."""
    return Path(reports_dir) if reports_dir is not None else runs_root(runs_dir) / default


def write_report(page: Path, title: str, sections: list[tuple[str, object]], tables: dict[Path, pd.DataFrame],
                 markdown: pd.DataFrame | None = None) -> Path:
    """Each table as CSV at its path, `markdown` as `<page>.md`, and the page of (heading, figure | table | text)
    sections, all written atomically; returns the page."""
    for path, table in tables.items():
        write_csv(path, table)
    if markdown is not None:
        write_text(page.with_suffix(".md"), plots.markdown_table(markdown))
    return plots.write_html_report(page, title, sections)


def write_study(stem: Path, figure: go.Figure, cells: pd.DataFrame, summary: pd.DataFrame, difference: pd.DataFrame,
                difference_title: str, settings: str) -> Path:
    """`<stem>-{cells,summary,difference}.csv`, `<stem>.md` (the summary) and `<stem>.html`; returns the page."""
    tables = {stem.with_name(f"{stem.name}-{part}.csv"): table
              for part, table in (("cells", cells), ("summary", summary), ("difference", difference))}
    return write_report(stem.with_suffix(".html"), stem.name, [
        ("", figure), (difference_title, difference), ("Summary", summary), ("Settings", settings),
        ("Every run", cells)], tables, markdown=summary)
