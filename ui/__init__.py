"""Streamlit-side helpers shared by app.py and pages/: caching, pickers, errors, downloads.

No torch code here or in pages/: models are loaded and run by ds_core; this package only caches
what ds_core returns and draws it.
"""
