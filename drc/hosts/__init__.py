"""Reaching hosts from the workstation: Fabric connections (remote), pyinfra inventories built from
the site model (inventory) and running deploys through pyinfra's API (deploy)."""
