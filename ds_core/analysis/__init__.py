"""ds_core/analysis"""
