"""`siaga report capacity`: the daily capacity report from the sites' Prometheus (SOP IN-3)."""
