"""RequestTable's declared columns (what type checkers see) match the columns it creates."""

import numpy as np

from simcost.workload.request_table import _COLUMNS, RequestTable
from simcost.workload.requests import Requests


def test_declared_columns_match_created_columns():
    declared = RequestTable.__annotations__
    assert set(_COLUMNS) <= set(declared)
    for name, (dtype, _) in _COLUMNS.items():
        assert f"np.{dtype.__name__}]" in declared[name], (name, declared[name])
    table = RequestTable(Requests(arrival_s=np.array([0.0, 1.0]), input_tokens=np.array([3, 4]),
                                  output_tokens=np.array([2, 5])))
    for name, (dtype, _) in _COLUMNS.items():
        assert getattr(table, name).dtype == dtype, name
