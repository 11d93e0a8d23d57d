"""The analysts' dashboard: Streamlit pages (queries live in include/dashboard)."""
