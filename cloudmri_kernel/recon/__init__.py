"""Image reconstruction. The reconstruction-engine issue adds parallel imaging, compressed sensing and NUFFT."""
