"""Unit conversions shared across the packages (bottom layer: imports nothing from simcost)."""

S_PER_HOUR = 3600.0
J_PER_KWH = 3.6e6  # 1 kWh = 1000 W x 3600 s
HOURS_PER_YEAR = 8760.0  # 365 days; purchase amortisation and reservation terms
HOURS_PER_MONTH = 730.0  # HOURS_PER_YEAR / 12, the usual cloud-billing month
