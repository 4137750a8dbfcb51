"""ds_core/episodes"""
