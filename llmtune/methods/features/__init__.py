"""The frozen model as a feature extractor: a linear probe on its pooled features."""
