"""Report plots: the figures a researcher looks at (report.md links them)."""
