"""Analysis reports and run comparisons (docs/architecture.md#analysis, docs/analysis.md).

Small modules, imports flowing one way::

    stats      summaries, bootstrap CI, Mann-Whitney U, the verdict rule (pure)
    metrics    the catalogue: metric ids, sources, units, directions (pure)
    query      one InfluxQL query per measurement per job → numpy arrays
    series     raw answers → one time series per node per metric (pure)
    report     per-run windows and figures; the report object (pure)
    change     one metric between two sets of runs: samples, test, verdict (pure)
    nodes      the comparison per node: which node changed (pure)
    compare    baseline vs candidate; the comparison object (pure)
    render     text, JSON, CSV; charts: the self-contained Bokeh HTML (pure)
    service    the manager's adapter: state + InfluxDB → objects, off the loop

The report and comparison objects are the one thing the CLI, the dashboard
and the files show; their JSON is documented in docs/report-schema.json.
"""
