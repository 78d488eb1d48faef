"""fencing role: never two writable primaries (SOP EM-3). See deploy.py and README.md."""
