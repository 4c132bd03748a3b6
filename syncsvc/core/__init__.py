"""What every stage shares: settings, errors, models, logging, shared types and the Host seam."""
