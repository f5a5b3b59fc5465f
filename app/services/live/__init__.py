"""Live evaluation: every served probability checked against the tick that followed."""
