"""ds_core/models"""
