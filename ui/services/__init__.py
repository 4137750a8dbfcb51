"""ui/services"""
