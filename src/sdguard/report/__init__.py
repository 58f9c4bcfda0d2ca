"""Reports: JSON for machines, self-contained HTML for people, plots and image grids."""

from .images import auto_scale, make_grid, png_bytes
from .reader import StoredReport, read_report
from .report import SCHEMA_VERSION, Report, Section, load_report

__all__ = ["Report", "Section", "SCHEMA_VERSION", "load_report", "read_report", "StoredReport", "make_grid",
           "png_bytes", "auto_scale"]
