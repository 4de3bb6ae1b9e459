"""What FOCUS 1.1 asks of a cost and usage dataset, as data, and a checker for rows of it.

Source: the FinOps Open Cost and Usage Specification (FOCUS) 1.1, https://focus.finops.org/focus-specification/v1-1/
(column definitions: github.com/FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec, specification/columns/).
Only what simcost's export uses is listed among the conditional columns; every mandatory column is.
`focus_problems` returns what a dataset gets wrong, one line each: the tests run it on every export.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime

FOCUS_VERSION = "1.1"
SOURCE_URL = "https://focus.finops.org/focus-specification/v1-1/"

# Feature level "Mandatory" in FOCUS 1.1: present in every dataset
MANDATORY = ("BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
             "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
             "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost", "PricingQuantity",
             "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName")
# Mandatory columns that may be null (the rest must not be)
NULLABLE = frozenset({"BillingAccountName", "ChargeClass", "PricingQuantity", "PricingUnit"})
# Recommended or conditional columns the export fills: commitment discounts (a provider that offers them
# MUST have these), prices, resources, region, tags
CONDITIONAL = ("ChargeFrequency", "CommitmentDiscountCategory", "CommitmentDiscountId", "CommitmentDiscountName",
               "CommitmentDiscountQuantity", "CommitmentDiscountStatus", "CommitmentDiscountType",
               "CommitmentDiscountUnit", "ContractedUnitPrice", "ListUnitPrice", "PricingCategory", "RegionId",
               "ResourceId", "ResourceName", "ResourceType", "Tags")
COMMITMENT_COLUMNS = ("CommitmentDiscountCategory", "CommitmentDiscountName", "CommitmentDiscountQuantity",
                      "CommitmentDiscountType", "CommitmentDiscountUnit")

ALLOWED = {
    "ChargeCategory": frozenset({"Usage", "Purchase", "Tax", "Credit", "Adjustment"}),
    "ChargeClass": frozenset({None, "Correction"}),
    "ChargeFrequency": frozenset({"One-Time", "Recurring", "Usage-Based"}),
    "PricingCategory": frozenset({None, "Standard", "Dynamic", "Committed", "Other"}),
    "CommitmentDiscountCategory": frozenset({None, "Spend", "Usage"}),
    "CommitmentDiscountStatus": frozenset({None, "Used", "Unused"}),
    "ServiceCategory": frozenset({
        "AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases", "Developer Tools",
        "Multicloud", "Identity", "Integration", "Internet of Things", "Management and Governance", "Media",
        "Migration", "Mobile", "Networking", "Security", "Storage", "Web", "Other"}),
}
COST_COLUMNS = ("BilledCost", "EffectiveCost", "ListCost", "ContractedCost")
DATE_COLUMNS = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
# ISO 8601 in UTC, as FOCUS's Date/Time Format asks: YYYY-MM-DDTHH:mm:ss with optional fraction, then Z
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
# a column that is not in the specification starts with x_ (custom columns), as do the export's tag keys
CUSTOM_PREFIX = "x_"


def focus_problems(rows: Iterable[Mapping], columns: Iterable[str]) -> list[str]:
    """Every way the rows break the FOCUS 1.1 rules above (empty: conformant). `columns` is the
    dataset's header; a row's null is None (CSV readers: pass '' cells as None)."""
    columns = tuple(columns)
    known = set(MANDATORY) | set(CONDITIONAL)
    problems = [f"missing mandatory column {c}" for c in MANDATORY if c not in columns]
    problems += [f"column {c} is neither FOCUS nor prefixed {CUSTOM_PREFIX}" for c in columns
                 if c not in known and not c.startswith(CUSTOM_PREFIX)]
    for i, row in enumerate(rows):
        problems += [f"row {i}: {p}" for p in _row_problems(row)]
    return problems


def _row_problems(row: Mapping) -> list[str]:
    out = [f"{c} is null" for c in MANDATORY if c in row and c not in NULLABLE and row[c] in (None, "")]
    out += [f"{c}={row[c]!r} is not an allowed value" for c, allowed in ALLOWED.items() if c in row and row[c] not in allowed]
    out += [f"{c}={row[c]!r} is not ISO 8601 UTC" for c in DATE_COLUMNS if not ISO_UTC.match(str(row.get(c)))]
    if not out and not _parse(row["ChargePeriodStart"]) < _parse(row["ChargePeriodEnd"]):
        out.append("ChargePeriodStart is not before ChargePeriodEnd")
    if not out and not (_parse(row["BillingPeriodStart"]) <= _parse(row["ChargePeriodStart"])
                        and _parse(row["ChargePeriodEnd"]) <= _parse(row["BillingPeriodEnd"])):
        out.append("the charge period is not inside its billing period")
    category = row.get("ChargeCategory")
    if category in ("Usage", "Purchase") and row.get("ChargeClass") is None and row.get("PricingUnit") in (None, ""):
        out.append("PricingUnit is null on a Usage or Purchase row")
    if category == "Usage" and row.get("ChargeFrequency") == "One-Time":
        out.append("a Usage row is One-Time")
    commitment = row.get("CommitmentDiscountId")
    if commitment in (None, ""):
        out += [f"{c} is set without a CommitmentDiscountId" for c in (*COMMITMENT_COLUMNS, "CommitmentDiscountStatus")
                if row.get(c) not in (None, "")]
    elif category == "Usage" and row.get("CommitmentDiscountStatus") in (None, ""):
        out.append("CommitmentDiscountStatus is null on a Usage row of a commitment")
    if category == "Purchase" and commitment not in (None, "") and float(row["EffectiveCost"]) != 0:
        out.append("a commitment's Purchase row has EffectiveCost (it is amortised into the usage rows)")
    tags = row.get("Tags")
    if isinstance(tags, str) and tags:
        tags = json.loads(tags)
    if isinstance(tags, Mapping):
        out += [f"tag {k!r} is not prefixed {CUSTOM_PREFIX}" for k in tags if not str(k).startswith(CUSTOM_PREFIX)]
    return out


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
