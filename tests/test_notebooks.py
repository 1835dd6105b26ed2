"""The notebooks run headless with papermill parameters (nbval runs them with their defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def test_transfer_notebook_runs_with_parameters(tmp_path):
    papermill = pytest.importorskip("papermill")
    import nbformat

    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "01_transfer_on_art.ipynb"), str(out), cwd=str(tmp_path),
                               parameters={"task": "medium", "epochs": 1, "image_size": 64, "k": 5,
                                           "runs_dir": str(tmp_path / "runs")}, progress_bar=False)
    notebook = nbformat.read(out, as_version=4)
    text = "\n".join(str(output.get("data", output.get("text", ""))) for cell in notebook.cells
                     for output in cell.get("outputs", []))
    assert "off_the_shelf" in text and "fine_tune" in text and "scratch" in text
    assert (tmp_path / "runs" / "synthetic-medium-fine_tune-mobilenet_v2-64px" / "analysis" / "report.html").is_file()
