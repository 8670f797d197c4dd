"""City bundles: the synthetic city generator and importers that write the bundle contract."""
