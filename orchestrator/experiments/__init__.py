"""Experiments: tone variants (and, where the legal guard allows, channels and send hours) tested against each
other on what debtors do — payments, agreed plans, disputes, complaints — never on opens.

``spec`` (what an experiment is), ``assign`` (which arm a debtor gets, pure), ``stats`` (intervals),
``report`` (rates per arm, pure), ``store`` (the SQL), ``api`` (the HTTP
routes), ``dispatch`` (the worker's use).
"""
