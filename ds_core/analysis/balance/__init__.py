"""ds_core/analysis/balance"""
