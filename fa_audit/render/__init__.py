"""Report: an AuditReport rendered as a terminal table or JSON."""
