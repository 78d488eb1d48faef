"""`siaga status`: read every host, decide whether the DRC is up to date (EM-3), report."""
