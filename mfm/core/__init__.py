"""The framework core: hooks, plugin loading, scales, config, City bundle, training."""
