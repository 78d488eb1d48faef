"""`siaga backup`: run, log, restore-test, restore into production, monthly report, offline copy.
The hosts do the backups (roles/backup); the workstation drives, collects and reports (BK-1..BK-9)."""
