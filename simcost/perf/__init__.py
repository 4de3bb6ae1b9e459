"""How long things take on a deployment: memory plan, step-time model, calibration, start-up."""
