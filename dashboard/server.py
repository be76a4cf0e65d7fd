"""The dashboard's server: Streamlit's ASGI app (``st.App``) of ``dashboard/app.py`` with one
route of Orchestra's own, ``dashboard.auth.session_path()``, which sets and clears the
login cookie as HttpOnly (the page's scripts never hold the session token).

``orchestra dashboard`` runs ``streamlit run dashboard/server.py`` (Streamlit finds the
``app`` below and serves it with uvicorn). ``streamlit run dashboard/app.py`` still
serves every page, but without this route a password login lasts only as long as the
browser tab's connection.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from starlette.routing import Route  # noqa: E402

from dashboard import auth  # noqa: E402

app = st.App(Path(__file__).resolve().parent / "app.py",
             routes=[Route(auth.session_path(), auth.session_endpoint, methods=["POST", "DELETE"])])
