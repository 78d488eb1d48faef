"""The admin workstation itself (issue 11 point 4): its copy on the DRC and a new workstation taking over."""
