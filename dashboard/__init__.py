"""Orchestra's Streamlit dashboard: ``streamlit run dashboard/app.py`` (``orchestra dashboard``)."""
