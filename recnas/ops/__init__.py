"""recnas.ops"""
