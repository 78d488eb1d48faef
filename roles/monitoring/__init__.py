"""monitoring role: Prometheus, Alertmanager and their exporters from Debian on every server (SOP IN-3, IN-4).

Each site's Prometheus scrapes both sites, so the loss of either raises an alert from the other;
the two Alertmanagers are one cluster, so an alert both sites see is mailed once. siaga's own
figures (backup age, replication position) come from drc/hostside/monitor_figures.py through
node-exporter's textfile collector.
"""
