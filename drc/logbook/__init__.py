"""The remote-repair logbook (SOP RA-5, RA-6): every admin SSH session on every host, who, from
which network, when, and the analysis of the fault and of the repair.

book.py decides on data (host answers in, records out; unit-tested), command.py is `siaga logbook`.
"""
