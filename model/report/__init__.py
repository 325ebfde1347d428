"""The experiment summary: every stage's outputs gathered into results/summary.md,
summary.json and figures (what run_experiment.py prints at the end).

    collect    read each stage's outputs into typed records (missing = n/a, never filled in)
    checks     derived numbers (AP tables, uncertainty rows) and the demo's acceptance checks
    sections   the Markdown sections, tables as pandas DataFrames
    figures    the PNG figures (model.plots)
    document   summary.md + summary.json (write_summary)
    uncertainty  the uncertainty step's tables and figures (eval/util_ainu.py)

Rebuild the summary without the runner:  python -m model.report --output_root DIR
"""
from model.report.document import write_summary  # noqa: F401
