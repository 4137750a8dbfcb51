"""Page services: core results turned into page-shaped frames, user limits and labels (no Streamlit, no torch)."""
