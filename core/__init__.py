"""Orchestra's leaf facts, shared by every layer.

Owns: the settings (`core.settings`: every ``ORCHESTRA_*`` variable and the home
folder, one typed object read once), secret redaction (`core.redact`) and the one
shape of a ledger call row (`core.calls.CallRecord`) and tool-call row
(`core.calls.ToolCallRecord`) that the engine writes and the ledger stores.

Never: imports another Orchestra package, Prefect, SQLAlchemy or an LLM SDK.
"""
