"""The built-in modality plugins, one package each (declared as ``mfm`` entry points)."""
