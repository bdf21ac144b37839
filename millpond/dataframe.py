"""smallpond's ``smallpond.dataframe`` module path: the Session and DataFrame types."""

from millpond.api.dataframe import DataFrame, GroupedData
from millpond.api.session import Session

__all__ = ["Session", "DataFrame", "GroupedData"]
