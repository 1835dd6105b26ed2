"""What every study writes beside its runs: its tables as CSV, its summary as markdown, one HTML page."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from artlab import plots
from artlab.io import write_csv, write_text
from artlab.runs import runs_root


def reports_folder(reports_dir: str | Path | None, runs_dir: str | Path | None) -> Path:
    """Where a study's report goes: `reports_dir`, else `reports/` in the runs folder."""
    return Path(reports_dir) if reports_dir is not None else runs_root(runs_dir) / "reports"


def write_study(stem: Path, figure: go.Figure, cells: pd.DataFrame, summary: pd.DataFrame, difference: pd.DataFrame,
                difference_title: str, settings: str) -> Path:
    """`<stem>-{cells,summary,difference}.csv`, `<stem>.md` (the summary) and `<stem>.html`; returns the page."""
    for part, table in (("cells", cells), ("summary", summary), ("difference", difference)):
        write_csv(stem.with_name(f"{stem.name}-{part}.csv"), table)
    write_text(stem.with_suffix(".md"), plots.markdown_table(summary))
    return plots.write_html_report(stem.with_suffix(".html"), stem.name, [
        ("", figure), (difference_title, difference), ("Summary", summary), ("Settings", settings),
        ("Every run", cells)])
