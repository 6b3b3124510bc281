"""recnas.supernet"""
