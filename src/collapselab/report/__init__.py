"""The report: tables, one function per plot, self-contained HTML and Markdown, CSV/Parquet results."""
