"""recnas.search"""
