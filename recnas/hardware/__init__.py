"""recnas.hardware"""
