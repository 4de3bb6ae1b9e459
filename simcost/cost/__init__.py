"""What things cost: pricing models, energy, the replica roster and the per-step ledger kernels."""
