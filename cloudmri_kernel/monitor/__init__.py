"""Monitoring: the audit trail of every data access (and, later, metrics)."""
