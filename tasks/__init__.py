"""Plain, Prefect-free functions behind each pipeline stage."""
