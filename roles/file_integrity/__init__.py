"""File integrity (AIDE) of the system binaries, siaga's programs and the application tree. SOP IN-2."""
