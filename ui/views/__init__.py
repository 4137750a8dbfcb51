"""Streamlit sections of pages that are split by view (a page script routes to them)."""
