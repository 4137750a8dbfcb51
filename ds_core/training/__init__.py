"""ds_core/training"""
