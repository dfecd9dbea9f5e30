"""Assets by pipeline stage."""
