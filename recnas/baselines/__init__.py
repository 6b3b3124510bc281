"""recnas.baselines"""
