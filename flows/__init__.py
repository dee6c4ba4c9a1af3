"""Prefect flows and the `segments` command line that runs them."""
