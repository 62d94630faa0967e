"""Tilebox's MultiCluster example as farmd Python tasks."""
