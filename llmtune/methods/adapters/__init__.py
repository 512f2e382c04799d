"""Bottleneck adapters (Houlsby, Pfeiffer placement); _layers.py holds the torch modules."""
