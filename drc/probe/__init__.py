"""The probe and the watcher (issue 10 point 6): what a user outside sees during a switch-over
(writer.py: a row and a file every 100 ms over HTTPS through the public name), what the data tier
does meanwhile (watcher.py: writable primaries, every 0.2 s), and afterwards what was kept
(check.py: RPO, RTO). `siaga probe` (command.py); `python -m drc.probe` runs it where no siaga
command line is set up (the lab's outsider network namespace)."""
