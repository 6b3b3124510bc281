"""recnas.embedding"""
