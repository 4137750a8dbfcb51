"""ds_core/attribution"""
