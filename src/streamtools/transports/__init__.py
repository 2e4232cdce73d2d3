"""One module per transport; each imports only the core and its own client library."""
