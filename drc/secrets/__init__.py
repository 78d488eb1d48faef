"""`siaga secrets`: escrow of the backup secrets, restore with only the escrow, explicit rotation (SOP BK-8)."""
