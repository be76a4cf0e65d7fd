"""Orchestra's Streamlit + plotly dashboard: ``streamlit run dashboard/server.py`` (``orchestra dashboard``).

Owns: the pages (``dashboard/views``), the login gate and its cookie route (``dashboard.auth``,
``dashboard/server.py``), their shared widgets (``dashboard.ui``) and what they show as plain
data (``dashboard.data``: ``ledger.queries`` composed with the registry, the settings and the Prefect API).

Never: runs SQL or holds a database connection (it reads ``ledger.queries``), writes a
file or a ledger row itself (every write goes through the app layer's audited services:
``orchestra.agent_files``, ``orchestra.actions``, ``orchestra.users``), or shows a secret
(keys appear only as "set" / "not set", URLs with their passwords masked).
"""
