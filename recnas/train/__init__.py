"""recnas.train"""
