"""The web console: admin-look pages over the service layer (status, plan, run, history, audit)."""
