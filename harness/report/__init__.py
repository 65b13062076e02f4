"""Stage 4: renderings of report.json, the recommendation, compare, re-render."""
