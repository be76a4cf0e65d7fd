"""Orchestra's Streamlit + plotly dashboard: ``streamlit run dashboard/app.py`` (``orchestra dashboard``).

Owns: the pages (``dashboard/views``), their shared widgets (``dashboard.ui``) and what
they show as plain data (``dashboard.data``: ``ledger.queries`` composed with the
registry, the settings and the Prefect API).

Never: runs SQL or holds a database connection (it reads ``ledger.queries``), writes a
file itself (agent edits go through ``agents.registry.save_agent``), or shows a secret
(keys appear only as "set" / "not set", URLs with their passwords masked).
"""
