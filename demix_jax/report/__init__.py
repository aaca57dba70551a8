"""Report: summary.json, report.md and the plots a researcher looks at."""
