"""Compute: running reconstruction tasks on a Dask cluster (a LocalCluster by default)."""
